"""Large messages over SMTP: the daemon's peak memory and throughput under concurrent big DATA.

    .venv/bin/python bench/smtp_large.py [--size-mb 30] [--clients 16] [--rounds 1]
        [--set spill_bytes=1048576] [--set max_data_bytes_in_flight=536870912]

Starts `bridge run` on SQLite in a temporary directory, sends `clients` x
`rounds` distinct messages of `size-mb` MB each (a text part and a base64
attachment of random bytes, as a scanned PDF would be) over `clients`
concurrent connections, and prints one JSON line: peak_rss_mb (the kernel's
high-water mark, VmHWM, and the largest RSS sampled every 0.1 s), MB/s and
messages/s, the slowest message, refusals, and whether spill files were left;
meanwhile one more client sends a small message every 0.5 s and the
slowest of those (MAIL to 250) is reported too, and so is the slowest
`/healthz` answer, asked every 0.5 s.
`--set KEY=VALUE` adds `[smtp]` keys to the daemon's configuration.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def big_message(size: int, tag: str) -> bytes:
    """A distinct message of about `size` bytes on the wire, with CRLF line ends."""
    head = (
        f"From: Sender <sender@example.org>\r\nTo: team@example.com\r\n"
        f"Subject: large message {tag}\r\nMessage-ID: <{tag}@bench.example>\r\n"
        f"Date: Sun, 06 Dec 2026 01:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="b-{tag}"\r\n\r\n'
        f"--b-{tag}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"The scan you asked for, {tag}.\r\n\r\n"
        f"--b-{tag}\r\nContent-Type: application/pdf\r\n"
        f'Content-Disposition: attachment; filename="scan-{tag}.pdf"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    tail = f"\r\n--b-{tag}--\r\n".encode()
    raw = os.urandom(max(0, (size - len(head) - len(tail)) * 57 // 78))
    lines = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    return head + lines + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    size = int(args.size_mb * MB)
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        workdir = Path(tmp)
        spill = workdir / "spill"
        spill.mkdir()
        smtp_port, web_port = free_port(), free_port()
        extra = "".join(f"{item}\n" for item in args.set)
        extra = extra.replace("SPILL_DIR", str(spill))
        (workdir / "bridge.toml").write_text(
            f'[database]\nurl = "sqlite:///{workdir}/bridge.db"\n'
            f'[smtp]\ndomains = ["example.com"]\n{extra}'
            f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {smtp_port}\n'
            f'[web]\nport = {web_port}\n[log]\nlevel = "warning"\n',
            encoding="utf-8",
        )
        log = (workdir / "bridge.log").open("wb")
        env = dict(os.environ, TMPDIR=str(spill))  # spill files land where they can be counted
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(workdir / "bridge.toml")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit((workdir / "bridge.log").read_text()) from None
                time.sleep(0.1)
        start_rss = status_kb(proc.pid, "VmRSS")
        messages = [
            [big_message(size, f"c{c}r{r}-{time.time_ns()}") for r in range(args.rounds)]
            for c in range(args.clients)
        ]
        samples: list[int] = []
        done = threading.Event()
        latencies: list[float] = []
        refusals: list[str] = []
        lock = threading.Lock()

        def sample() -> None:
            while not done.is_set():
                samples.append(status_kb(proc.pid, "VmRSS"))
                done.wait(0.1)

        def client(mine: list[bytes]) -> None:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=600) as smtp:
                for data in mine:
                    started = time.perf_counter()
                    try:
                        smtp.sendmail("sender@example.org", ["team@example.com"], data)
                    except smtplib.SMTPResponseException as exc:
                        with lock:
                            refusals.append(f"{exc.smtp_code} {exc.smtp_error!r}")
                        continue
                    with lock:
                        latencies.append(time.perf_counter() - started)

        small_latencies: list[float] = []

        def small_client() -> None:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=600) as smtp:
                n = 0
                while not large_done.is_set():
                    n += 1
                    data = big_message(4000, f"small{n}-{time.time_ns()}")
                    started = time.perf_counter()
                    smtp.sendmail("sender@example.org", ["team@example.com"], data)
                    small_latencies.append(time.perf_counter() - started)
                    large_done.wait(0.5)

        health_latencies: list[float] = []

        def health_client() -> None:
            while not large_done.is_set():
                started = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=60):
                    health_latencies.append(time.perf_counter() - started)
                large_done.wait(0.5)

        large_done = threading.Event()
        health = threading.Thread(target=health_client)
        sampler = threading.Thread(target=sample)
        sampler.start()
        small = threading.Thread(target=small_client)
        threads = [threading.Thread(target=client, args=(m,)) for m in messages]
        started = time.perf_counter()
        try:
            for t in threads:
                t.start()
            small.start()
            health.start()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - started
            large_done.set()
            small.join()
            health.join()
            hwm = status_kb(proc.pid, "VmHWM")
            stat = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
            cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            done.set()
            sampler.join()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            log.close()
        left = sorted(p.name for p in spill.iterdir())
        sent = len(latencies)
        print(
            json.dumps(
                {
                    "size_mb": args.size_mb,
                    "clients": args.clients,
                    "messages": sent,
                    "refused": len(refusals),
                    "refusals": sorted(set(refusals))[:3],
                    "settings": args.set,
                    "start_rss_mb": round(start_rss / 1024, 1),
                    "peak_rss_mb": round(hwm / 1024, 1),
                    "peak_sampled_rss_mb": round(max(samples) / 1024, 1),
                    "seconds": round(seconds, 2),
                    "mb_per_s": round(sent * size / MB / seconds, 1),
                    "messages_per_s": round(sent / seconds, 2),
                    "daemon_cpu_s": round(cpu, 1),
                    "load_average": round(os.getloadavg()[0], 1),
                    "slowest_s": round(max(latencies), 2) if latencies else None,
                    "small_messages": len(small_latencies),
                    "small_slowest_s": round(max(small_latencies), 2) if small_latencies else None,
                    "healthz_slowest_s": round(max(health_latencies), 2)
                    if health_latencies
                    else None,
                    "spill_files_left": left,
                    "exit_code": code,
                }
            )
        )


if __name__ == "__main__":
    main()
