"""Viewer benchmark: `python bench/web.py STORE_DB [--duration 30] [--rate 200]`.

Starts the real app (`bridge.web.app.make_app` over a StoreRunner on the
given SQLite store) in a subprocess on a free loopback port. The R lists are
spaces open to staff, and the READERS people who wrote in the most threads
are staff and signed in (one session each); the most active of them is the
reader of the probe and the single-request timings. It picks real threads of
about 50 messages and real search queries, then (wrk rotating over every
reader's session, so kept pages are shared only as the app shares them):

1. paced load: wrk (Debian's, no `-R`: bench/web.lua paces each connection
   with `delay()`) sends thread and search pages at about RATE req/s for
   DURATION seconds, while a probe process of our own (asyncio + aiohttp,
   open loop: requests are sent on schedule, not after the previous answer)
   times thread and search pages apart at a few req/s. Reported: the rate
   reached, wrk's latency percentiles, the probe's p50/p95 per page kind,
   errors (non-2xx, socket errors, timeouts);
2. service time: each page alone, one request at a time (no other load);
3. capacity: wrk unpaced for a few seconds per page kind (requests/s);
4. page weight: a thread page's HTML less its message texts (the new text,
   quoted history and signature of each message as the API returns them,
   HTML-escaped, subtracted where found in the page), plus style.css and
   app.js.

Prints the figures as one JSON line at the end. The reader's session is a
real row written to the store (`web_sessions`).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import escape

HERE = Path(__file__).parent
LUA = HERE / "web.lua"
SEARCHES = (
    "memory leak",
    "package check",
    '"R CMD check"',
    "segfault",
    "vignette",
    "namespace imports",
    "from:ripley windows",
    "CRAN submission",
    "gas contract",
    "has:attachment build",
    "bioconductor",
    "unicode encoding",
)
THREAD_SIZE = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the server


def serve(db: str, port: int) -> None:
    """The app as the daemon runs it, on `port` (run in a subprocess)."""
    from aiohttp import web

    from bridge.config import parse_config
    from bridge.signing import Signer
    from bridge.store.db import make_engine
    from bridge.store.runner import StoreRunner
    from bridge.web.app import make_app
    from bridge.web.frame.metrics import Metrics

    config = parse_config(bench_config(os.environ["BENCH_READERS"].split(",")), "bench.toml")
    store = StoreRunner(make_engine(db))
    signer = Signer(bytes.fromhex(os.environ["BENCH_KEY"]))
    app = make_app(store, Metrics(), dict, config=lambda: config, signer=signer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ------------------------------------------------------------ choosing work

# Each mailing list is a space open to all staff, as an admin would set it up
# with a rule on the mailbox; the reader is staff. What a rule would have
# done at import is applied to the store once (`assign_list_spaces`).
LIST_SPACES = ("r-devel", "r-package-devel")


def bench_config(readers: list[str]) -> dict[str, Any]:
    domains = sorted({reader.rpartition("@")[2] for reader in readers})
    cache_mb = int(os.environ.get("BENCH_PAGE_CACHE_MB", "64"))
    return {
        "web": {"cookie_secure": False, "page_cache_mb": cache_mb},
        "bridge": {"staff_domains": domains},
        "spaces": [{"slug": slug, "visibility": "staff"} for slug in LIST_SPACES],
    }


def assign_list_spaces(session: Any) -> None:
    """Put each list's threads in its space, by the mailbox their copies came from."""
    from sqlalchemy import text

    for slug in LIST_SPACES:
        mailbox = {"pattern": f"{slug}/%"}
        session.execute(
            text(
                "UPDATE messages SET space = :slug WHERE space IS NULL AND id IN "
                "(SELECT message_pk FROM deliveries WHERE mailbox LIKE :pattern)"
            ),
            {"slug": slug, **mailbox},
        )
        session.execute(
            text(
                "UPDATE threads SET space = :slug WHERE space IS NULL AND id IN "
                "(SELECT thread_id FROM messages WHERE space = :slug)"
            ),
            {"slug": slug},
        )


def prepare(db: str, key: bytes, readers: int) -> dict[str, Any]:
    """The readers and their session cookies, thread ids near 50 messages."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from bridge.config import parse_config
    from bridge.core.access import viewer_for
    from bridge.signing import Signer
    from bridge.store.db import make_engine
    from bridge.store.migrate import upgrade
    from bridge.store.visibility.access import visible_thread_ids
    from bridge.web.account.auth_store import create_session

    engine = make_engine(db)
    upgrade(engine)  # as the daemon does on start
    with Session(engine) as session, session.begin():
        assign_list_spaces(session)
    with Session(engine) as session:
        # The people who wrote in the most threads: heavy, real readers; the
        # first is the one the probe and the single-request timings sign in as.
        chosen = list(
            session.execute(
                text(
                    "SELECT p.address FROM messages m JOIN people p ON p.id = m.sender_id "
                    "WHERE p.address LIKE '%@%' GROUP BY p.address "
                    "ORDER BY count(DISTINCT m.thread_id) DESC LIMIT :n"
                ),
                {"n": readers},
            ).scalars()
        )
        reader = chosen[0]
        config = parse_config(bench_config(chosen), "bench.toml")
        viewer = viewer_for(reader, config.spaces, config.staff_domains)
        visible = visible_thread_ids(session, viewer)
        sized = session.execute(
            text(
                "SELECT id, message_count FROM threads WHERE message_count BETWEEN 30 AND 80 "
                "ORDER BY abs(message_count - :n), id"
            ),
            {"n": THREAD_SIZE},
        ).all()
        threads = [(tid, count) for tid, count in sized if tid in visible][:20]
        counts = session.execute(text("SELECT count(*) FROM messages")).scalar_one()
    with Session(engine) as session, session.begin():
        raw_ids = [create_session(session, r, "link", datetime.now(UTC), 1) for r in chosen]
    engine.dispose()
    cookies = [Signer(key).sign("session", raw_id) for raw_id in raw_ids]
    cookie = cookies[0]
    return {
        "reader": reader,
        "readers": chosen,
        "cookies": cookies,
        "visible_threads": len(visible),
        "messages": counts,
        "threads": threads,
        "cookie": cookie,
    }


# ------------------------------------------------------------------ probing


async def open_loop(rate: float, seconds: float, send: Callable[[int], Awaitable[None]]) -> None:
    """Request n leaves at n / rate seconds, whatever came back before; waits for them all."""
    tasks = []
    start = time.perf_counter()
    n = 0
    while (due := n / rate) < seconds:
        wait = start + due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(send(n)))
        n += 1
    await asyncio.gather(*tasks)


async def probe(base: str, cookie: str, paths: dict[str, list[str]], rate: float, seconds: float):
    """Open-loop: each request leaves on its schedule; latencies per kind, errors."""
    import aiohttp

    kinds = list(paths)
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, int] = {k: 0 for k in kinds}
    statuses: dict[str, int] = {}
    headers = {"Cookie": f"bridge_session={cookie}"}
    connector = aiohttp.TCPConnector(limit=0)

    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as client:

        async def one(kind: str, path: str) -> None:
            started = time.perf_counter()
            try:
                async with client.get(path, allow_redirects=False) as response:
                    await response.read()
                    elapsed = time.perf_counter() - started
                    if response.status != 200:
                        errors[kind] += 1
                        statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
                    else:
                        latencies[kind].append(elapsed)
            except (aiohttp.ClientError, TimeoutError):
                errors[kind] += 1

        def send(i: int) -> Awaitable[None]:
            kind = kinds[i % len(kinds)]
            return one(kind, paths[kind][(i // len(kinds)) % len(paths[kind])])

        await open_loop(rate, seconds, send)

    def pct(values: list[float], q: int) -> float | None:
        if len(values) < 2:
            return None
        return round(statistics.quantiles(values, n=100)[q - 1] * 1000, 2)

    return {
        kind: {
            "requests": len(latencies[kind]) + errors[kind],
            "p50_ms": pct(latencies[kind], 50),
            "p95_ms": pct(latencies[kind], 95),
            "errors": errors[kind],
        }
        for kind in kinds
    } | {"statuses": statuses}


def run_probe(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.probe).read_text())
    result = asyncio.run(
        probe(spec["base"], spec["cookie"], spec["paths"], spec["rate"], spec["seconds"])
    )
    print(json.dumps(result))


# --------------------------------------------------------------------- wrk


def wrk(
    base: str, paths: list[str], cookie: str, *, seconds: int, connections: int, delay_ms: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as listing:
        listing.write("\n".join(paths) + "\n")
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "5s",
                "-s",
                str(LUA),
                base + "/",
                "--",
                listing.name,
                cookie,
                str(delay_ms),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(listing.name)
    line = next(x for x in out.splitlines() if x.startswith("{"))
    raw = json.loads(line)
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"],
        "rate": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "non_2xx": raw["status"],
    }


def paced_delay_ms(rate: float, connections: int, unloaded: dict[str, Any]) -> int:
    """The pause each paced wrk connection takes between answers to send about `rate` req/s.

    Each connection waits `delay` between answers: C / (delay + latency) ≈ rate.
    The latency allowance is the pages' own time alone (`unloaded`: `solo`
    figures per page kind) plus wrk's turnaround.
    """
    alone = [figures["p50_ms"] or 0.0 for figures in unloaded.values()]
    allowance = 5 + sum(alone) / len(alone)
    return max(0, round(connections * 1000 / max(1.0, rate) - allowance))


# -------------------------------------------------------------- page weight


def page_weight(base: str, cookie: str, thread_id: int) -> dict[str, Any]:
    """A thread page's own bytes: its HTML less the message texts found in it, CSS, JS."""
    import urllib.request

    def get(path: str) -> bytes:
        request = urllib.request.Request(
            base + path, headers={"Cookie": f"bridge_session={cookie}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return bytes(response.read())

    page = get(f"/t/{thread_id}").decode()
    thread = json.loads(get(f"/api/v1/threads/{thread_id}"))
    found = content = missed = 0
    for message in thread["messages"]:
        for part in ("new_text", "quoted_text", "signature"):
            value = message[part].strip()
            if not value:
                continue
            # The pages escape with jinja2 (markupsafe); try the stdlib's forms too.
            forms = (str(escape(value)), html.escape(value, quote=False), html.escape(value))
            for form in forms:
                if form in page:
                    found += 1
                    content += len(form.encode())
                    break
            else:
                missed += 1
    css = len(get("/static/style.css"))
    js = len(get("/static/app.js"))
    html_bytes = len(page.encode())
    return {
        "thread_id": thread_id,
        "messages": len(thread["messages"]),
        "html_bytes": html_bytes,
        "message_text_bytes": content,
        "texts_found": found,
        "texts_not_found": missed,
        "css_bytes": css,
        "js_bytes": js,
        "without_content_bytes": html_bytes - content + css + js,
    }


# -------------------------------------------------------------------- main


def wait_up(base: str, server: subprocess.Popen[bytes], seconds: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def warm(base: str, cookie: str, paths: list[str]) -> dict[str, int]:
    """Every URL once (also checks they answer 200); returns statuses seen."""
    import urllib.error
    import urllib.request

    seen: dict[str, int] = {}
    for path in paths:
        request = urllib.request.Request(
            base + path, headers={"Cookie": f"bridge_session={cookie}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        seen[str(status)] = seen.get(str(status), 0) + 1
    return seen


def solo(base: str, cookie: str, paths: list[str], rounds: int = 3) -> dict[str, Any]:
    """Latency with no other load: each URL `rounds` times, one request at a time."""
    import urllib.request

    times = []
    for _ in range(rounds):
        for path in paths:
            request = urllib.request.Request(
                base + path, headers={"Cookie": f"bridge_session={cookie}"}
            )
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
            times.append(time.perf_counter() - started)
    cuts = statistics.quantiles(times, n=100)
    return {
        "requests": len(times),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p95_ms": round(cuts[94] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db", nargs="?")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument(
        "--readers",
        type=int,
        default=50,
        help="signed-in readers wrk rotates over (the most active writers)",
    )
    parser.add_argument("--probe-rate", type=float, default=10.0)
    parser.add_argument("--capacity-seconds", type=int, default=10)
    parser.add_argument(
        "--no-page-cache",
        action="store_true",
        help="render every page afresh ([web] page_cache_mb = 0)",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.probe:
        run_probe(args)
        return 0
    if not args.db or not Path(args.db).exists():
        parser.error("STORE_DB: an existing SQLite store")

    if args.no_page_cache:
        os.environ["BENCH_PAGE_CACHE_MB"] = "0"
    key = secrets.token_bytes(32)
    chosen = prepare(args.db, key, args.readers)
    if not chosen["threads"]:
        raise SystemExit("no thread of 30-80 messages is visible to the reader")
    cookie = chosen["cookie"]
    thread_paths = [f"/t/{tid}" for tid, _ in chosen["threads"]]
    search_paths = [f"/search?q={quote(q)}" for q in SEARCHES]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"BENCH_KEY": key.hex(), "BENCH_READERS": ",".join(chosen["readers"])}
    every_cookie = ",".join(chosen["cookies"])
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", args.db, "--port", str(port)], env=env
    )
    try:
        wait_up(base, server)
        statuses = warm(base, cookie, thread_paths + search_paths)
        print(f"reader {chosen['reader']}: {chosen['visible_threads']} threads; warm-up {statuses}")
        unloaded = {
            "thread": solo(base, cookie, thread_paths),
            "search": solo(base, cookie, search_paths),
        }
        probe_rate = args.probe_rate
        delay_ms = paced_delay_ms(args.rate - probe_rate, args.connections, unloaded)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
            json.dump(
                {
                    "base": base,
                    "cookie": cookie,
                    "paths": {"thread": thread_paths, "search": search_paths},
                    "rate": probe_rate,
                    "seconds": args.duration,
                },
                spec,
            )
        prober = subprocess.Popen(
            [sys.executable, __file__, "--probe", spec.name], stdout=subprocess.PIPE, text=True
        )
        mixed = [p for pair in zip(thread_paths, search_paths * 2, strict=False) for p in pair]
        load = wrk(
            base,
            mixed,
            every_cookie,
            seconds=args.duration,
            connections=args.connections,
            delay_ms=delay_ms,
        )
        probe_out, _ = prober.communicate(timeout=args.duration + 120)
        os.unlink(spec.name)
        probed = json.loads(probe_out.strip().splitlines()[-1])
        capacity = {
            kind: wrk(
                base,
                paths,
                every_cookie,
                seconds=args.capacity_seconds,
                connections=8,
                delay_ms=0,
            )
            for kind, paths in (("thread", thread_paths), ("search", search_paths))
        }
        weight = page_weight(base, cookie, chosen["threads"][0][0])
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    figures = {
        "store_messages": chosen["messages"],
        "reader": chosen["reader"],
        "readers": len(chosen["readers"]),
        "reader_threads": chosen["visible_threads"],
        "thread_sizes": [count for _, count in chosen["threads"]],
        "searches": list(SEARCHES),
        "cores": os.cpu_count(),
        "page_cache": not args.no_page_cache,
        "paced": {
            "target_rate": args.rate,
            "wrk": load,
            "probe": probed,
            "total_rate": round(load["rate"] + probe_rate, 1),
        },
        "unloaded": unloaded,
        "capacity": capacity,
        "page_weight": weight,
    }
    for kind in ("thread", "search"):
        p, u = probed[kind], unloaded[kind]
        print(
            f"{kind:7s} under load p50 {p['p50_ms']} ms  p95 {p['p95_ms']} ms  errors "
            f"{p['errors']}; alone p50 {u['p50_ms']} ms  p95 {u['p95_ms']} ms"
        )
    print(f"paced   {figures['paced']['total_rate']} req/s, wrk p50 {load['p50_ms']} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
