"""SMTP ingest benchmark: 20 concurrent clients against a `bridge run` process on SQLite.

    .venv/bin/python bench/smtp.py CORPUS [--messages 3000] [--clients 20]

CORPUS is a folder of real messages (e.g. the unpacked Enron maildir); each
message is sent with a fresh Message-ID and a numbered Subject, so every one
is distinct. Each 250 means the message is durable (SQLite synchronous=FULL).
Prints one JSON line: messages_per_s, p50_ms, p95_ms (per message, MAIL to 250).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_corpus(path: Path, limit: int = 2000) -> list[bytes]:
    """Up to `limit` messages under `path`, with CRLF line ends, as they travel over SMTP."""
    found: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            data = (Path(dirpath) / name).read_bytes()
            if b"\nSubject:" not in data and not data.startswith(b"Subject:"):
                continue  # headerless files (upstream damage) are not mail
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            found.append(data if data.endswith(b"\r\n") else data + b"\r\n")
            if len(found) >= limit:
                return found
    if not found:
        raise SystemExit(f"no messages under {path}")
    return found


def fresh_copy(data: bytes, tag: str) -> bytes:
    """`data` with a new Message-ID and a tagged Subject: a distinct message."""
    header = f"Message-ID: <{tag}@bench.example>".encode()
    data, n = re.subn(rb"(?im)^Message-ID:.*$", header, data, count=1)
    if not n:
        data = header + b"\r\n" + data
    return re.sub(
        rb"(?im)^(Subject:[^\r\n]*)", lambda m: m.group(1) + f" #{tag}".encode(), data, count=1
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """`bridge run` in a temporary directory, on free ports."""

    def __init__(self, workdir: Path) -> None:
        self.smtp_port, self.web_port = free_port(), free_port()
        config = workdir / "bridge.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{workdir}/bridge.db"\n'
            f'[smtp]\ndomains = ["example.com"]\n'
            f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {self.smtp_port}\n'
            f'[web]\nport = {self.web_port}\n[log]\nlevel = "warning"\n',
            encoding="utf-8",
        )
        self.log = (workdir / "bridge.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{self.web_port}/healthz"
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("bridge run did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU the daemon used so far (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        return code


def send_all(
    port: int,
    corpus: list[bytes],
    total: int,
    clients: int,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[float, list[float], int]:
    """Send `total` messages over `clients` connections; (seconds, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        nonlocal failures
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                data = fresh_copy(corpus[n % len(corpus)], f"bench-{n}-{time.time_ns()}")
                started = time.perf_counter()
                try:
                    smtp.sendmail("sender@enron.com", ["team@example.com"], data)
                except smtplib.SMTPResponseException as exc:
                    with lock:
                        failures += 1
                        if failures <= 3:
                            print(f"refused: {exc.smtp_code} {exc.smtp_error!r}", file=sys.stderr)
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if on_progress is not None:
                        on_progress(len(latencies))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    with tempfile.TemporaryDirectory(prefix="bench-smtp-") as tmp:
        daemon = Daemon(Path(tmp))
        try:
            cpu_before = daemon.cpu_seconds()
            seconds, latencies, failures = send_all(
                daemon.smtp_port, corpus, args.messages, args.clients
            )
            cpu = daemon.cpu_seconds() - cpu_before
        finally:
            code = daemon.stop()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        json.dumps(
            {
                "messages": len(latencies),
                "failures": failures,
                "clients": args.clients,
                "messages_per_s": round(len(latencies) / seconds, 1),
                "p50_ms": round(cuts[49] * 1000, 1),
                "p95_ms": round(cuts[94] * 1000, 1),
                "daemon_cpu_ms_per_msg": round(cpu * 1000 / max(len(latencies), 1), 2),
                "load_average": os.getloadavg()[0],
                "exit_code": code,
            }
        )
    )


if __name__ == "__main__":
    main()
