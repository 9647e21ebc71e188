-- wrk script for bench/web.py: rotates over a file of paths and over the
-- readers' session cookies, and paces each connection with delay() (Debian's
-- wrk has no -R). Arguments after `--`: PATHS_FILE COOKIES DELAY_MS, where
-- COOKIES are comma-separated.
-- done() prints one JSON line that bench/web.py reads.

local paths = {}
local cookies = {}
local turn = 0
local pause = 0
local at = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  for value in string.gmatch(args[2], "[^,]+") do
    cookies[#cookies + 1] = value
  end
  pause = tonumber(args[3]) or 0
  -- Threads start at different places so they do not all ask for the same page.
  at = math.random(#paths)
  turn = math.random(#cookies)
end

function delay()
  return pause
end

function request()
  at = at % #paths + 1
  turn = turn % #cookies + 1
  return wrk.format("GET", paths[at], { ["Cookie"] = "bridge_session=" .. cookies[turn] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, '
      .. '"p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max))
end
