"""IMAP benchmark: `python -P bench/imap.py [--messages 20000] [--corpus /tmp/corpora/maildir]`.

Fills a real Dovecot mailbox (tests/dovecot.py) with Enron messages, written
straight into its maildir (APPEND of 20,000 messages measures Dovecot, not
Bridge), then times:

- the initial sync of that folder into a fresh SQLite store (synchronous=FULL,
  as the daemon runs it), by one `ImapWorker`, target >= 500 messages/s;
- append-to-searchable latency while the worker IDLEs: a message is APPENDed
  and `bridge.search` is polled until it finds the message, target <= 2 s.

Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from imapclient import IMAPClient
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.dovecot

from bridge.config import ImapAccount
from bridge.ingest.imap import AccountStatus, ImapWorker, SessionStore
from bridge.ingest.imap_status import IDLE
from bridge.search import search
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from tests.dovecot import Dovecot


def corpus_files(root: Path, count: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if len(files) < count:
        raise SystemExit(f"{root} holds {len(files)} messages, fewer than {count}")
    return files[:count]


def fill_maildir(server: Dovecot, user: str, files: list[Path]) -> float:
    """Deliver the files into the user's INBOX maildir, then let Dovecot index them."""
    started = time.monotonic()
    maildir = server.root / "mail" / user
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(files):
        target = maildir / "new" / f"{1_700_000_000 + number}.bench{number}.bridge"
        target.write_bytes(path.read_bytes())
    for dirpath, _dirnames, filenames in os.walk(maildir):
        os.chown(dirpath, server.uid, server.gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), server.uid, server.gid)
    server.doveadm("mailbox", "status", "-u", user, "messages", "INBOX")
    return time.monotonic() - started


def measure_sync(worker: ImapWorker, status: AccountStatus, count: int) -> float:
    started = time.monotonic()
    while True:
        folder = status.folders.get("INBOX")
        if folder is not None and folder.stored >= count and status.state == IDLE:
            return time.monotonic() - started
        if time.monotonic() - started > 3600:
            raise SystemExit(f"sync did not finish: {status.snapshot()}")
        time.sleep(0.01)


def measure_latency(server: Dovecot, engine: object, sample: bytes, rounds: int) -> list[float]:
    latencies = []
    imap = IMAPClient(server.host, server.port, ssl=False, timeout=30)
    imap.login("alice", "alice-pw")
    try:
        for n in range(rounds):
            token = f"benchlatency{n}x{int(time.time())}"
            data = sample.replace(b"Message-ID: <", f"Message-ID: <{token}.".encode(), 1)
            data = data.replace(b"Subject: ", f"Subject: {token} ".encode(), 1)
            started = time.monotonic()
            imap.append("INBOX", data)
            while True:
                with Session(engine) as session:  # type: ignore[call-overload]
                    if search(session, f"subject:{token}").hits:
                        break
                if time.monotonic() - started > 30:
                    raise SystemExit(f"message {token} not searchable after 30 s")
                time.sleep(0.01)
            latencies.append(time.monotonic() - started)
            time.sleep(0.3)
    finally:
        imap.logout()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--corpus", default="/tmp/corpora/maildir")
    parser.add_argument("--batch-size", type=int, default=ImapAccount().batch_size)
    parser.add_argument("--rounds", type=int, default=10, help="latency samples")
    args = parser.parse_args()

    files = corpus_files(Path(args.corpus), args.messages)
    work = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    server = Dovecot()
    server.add_user("alice", "alice-pw")
    os.environ["BRIDGE_BENCH_IMAP_PASSWORD"] = "alice-pw"
    with server:
        fill_seconds = fill_maildir(server, "alice", files)
        engine = make_engine(str(work / "bridge.db"), synchronous="FULL")
        upgrade(engine)
        account = ImapAccount(
            name="bench",
            host=server.host,
            port=server.port,
            tls="plain",
            username="alice",
            password_env="BRIDGE_BENCH_IMAP_PASSWORD",
            batch_size=args.batch_size,
        )
        status = AccountStatus(account.name)
        worker = ImapWorker(account, SessionStore.from_engine(engine), status)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            sync_seconds = measure_sync(worker, status, len(files))
            latencies = measure_latency(server, engine, files[0].read_bytes(), args.rounds)
        finally:
            stop.set()
            worker.interrupt()
            thread.join(timeout=30)
        stored = status.folders["INBOX"].stored
    figures = {
        "benchmark": "imap",
        "messages": len(files),
        "stored": stored,
        "batch_size": args.batch_size,
        "fill_seconds": round(fill_seconds, 2),
        "sync_seconds": round(sync_seconds, 2),
        "sync_messages_per_second": round(len(files) / sync_seconds, 1),
        "idle_latency_median_seconds": round(statistics.median(latencies), 3),
        "idle_latency_max_seconds": round(max(latencies), 3),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
