"""The daemon's memory while it ingests: feed N messages over SMTP, sample its RSS.

    .venv/bin/python bench/daemon_rss.py CORPUS [--messages 100000] [--clients 20]

Corpus messages are reused with fresh Message-IDs (every one is stored as a
new message). Prints one JSON line with peak_rss_mb (the largest resident
set sampled every 0.5 s, and the kernel's high-water mark VmHWM).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # appended: never shadows the stdlib

from smtp import Daemon, load_corpus, send_all


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    samples: list[int] = []
    done = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        daemon = Daemon(Path(tmp))
        pid = daemon.proc.pid

        def sample() -> None:
            while not done.is_set():
                samples.append(status_kb(pid, "VmRSS"))
                done.wait(0.5)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start_rss = status_kb(pid, "VmRSS")

        def progress(n: int) -> None:
            if n % 10_000 == 0:
                rss = samples[-1] // 1024 if samples else 0
                print(f"{n} messages, rss {rss} MB", file=sys.stderr, flush=True)

        try:
            seconds, latencies, failures = send_all(
                daemon.smtp_port, corpus, args.messages, args.clients, progress
            )
            hwm = status_kb(pid, "VmHWM")
        finally:
            done.set()
            sampler.join()
            code = daemon.stop()
        db_mb = sum(f.stat().st_size for f in Path(tmp).glob("bridge.db*")) / 2**20
    print(
        json.dumps(
            {
                "messages": len(latencies),
                "failures": failures,
                "messages_per_s": round(len(latencies) / seconds, 1),
                "start_rss_mb": round(start_rss / 1024, 1),
                "peak_rss_mb": round(max(samples) / 1024, 1),
                "vm_hwm_mb": round(hwm / 1024, 1),
                "final_rss_mb": round(samples[-1] / 1024, 1),
                "db_mb": round(db_mb, 1),
                "exit_code": code,
            }
        )
    )


if __name__ == "__main__":
    main()
