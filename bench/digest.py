"""Digest benchmark: `python bench/digest.py STORE_DB [--people 5000] [--window-days 28]`.

Takes a store built by `bench/import.py ... --keep` (Enron and the R lists),
works on a copy of it, and runs one real digest run (`digest_run.run`: plan,
render, claim and enqueue, committed in batches) for the people most present
in the mail. Threads are put in two spaces (Enron's and the R lists'), whose
members are those people; every one of them gets a digest covering
`--window-days` of mail before `--at`. Prints one JSON line of figures.
Targets: 5,000 people in at most 60 s, peak RSS at most 300 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.outbound.digest_run import run
from bridge.store.db import make_engine
from bridge.store.migrate import is_current, upgrade
from bridge.store.tables import Message, Person, Recipient, User


def busiest(session: Session, limit: int) -> list[str]:
    """The `limit` addresses on the most messages, as sender or recipient."""
    sent = select(Message.sender_id.label("pid")).where(Message.sender_id.is_not(None))
    got = select(Recipient.person_id.label("pid"))
    both = sent.union_all(got).subquery()
    rows = session.execute(
        select(Person.address)
        .join(both, both.c.pid == Person.id)
        .where(Person.address.like("%@%"))
        .group_by(Person.address)
        .order_by(func.count().desc(), Person.address)
        .limit(limit * 2)
    )
    return [a.lower() for (a,) in rows if _member_like(a)]


def _member_like(address: str) -> bool:
    # What [[spaces]] members accept: the bench puts these people in spaces.
    _local, at, domain = address.partition("@")
    return bool(at) and "." in domain and " " not in address and '"' not in address


def config_for(people: list[str]) -> str:
    enron = [a for a in people if a.endswith("enron.com")]
    others = [a for a in people if not a.endswith("enron.com")]
    return f"""
[bridge]
message_id_domain = "bridge.example.com"
address = "bridge@example.com"
staff_domains = ["staff.invalid"]
[web]
base_url = "https://bridge.example.com"
[digest]
weekly_day = "saturday"
[[spaces]]
slug = "enron"
name = "Enron"
members = {json.dumps(enron)}
[[spaces]]
slug = "r"
name = "R development"
members = {json.dumps(others)}
"""


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", help="SQLite store made by bench/import.py --keep")
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--window-days", type=int, default=28)
    parser.add_argument("--at", default="2001-11-03T09:00:00+00:00", help="the run's time")
    args = parser.parse_args()

    now = datetime.fromisoformat(args.at)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "digest-bench.db"
        shutil.copyfile(args.store, copy)
        engine = make_engine(str(copy))
        if not is_current(engine):
            upgrade(engine)
        with Session(engine) as session, session.begin():
            people = busiest(session, args.people)[: args.people]
            # Threads with Enron senders in Enron's space, the rest in R's.
            session.execute(text("UPDATE threads SET space = 'r', private = false"))
            session.execute(
                text(
                    "UPDATE threads SET space = 'enron' WHERE id IN (SELECT m.thread_id "
                    "FROM messages m JOIN people p ON p.id = m.sender_id "
                    "WHERE p.address LIKE '%enron.com')"
                )
            )
            session.execute(text("DELETE FROM digest_sends"))
            session.execute(text("DELETE FROM outbox"))
            last = now - timedelta(days=args.window_days)
            session.execute(text("DELETE FROM users"))
            session.add_all(User(address=a, created_at=last, last_digest_at=last) for a in people)
            window = session.scalar(
                select(func.count()).where(Message.sort_date >= last, Message.sort_date <= now)
            )
            total = session.scalar(select(func.count()).select_from(Message))
        config = parse_config(tomllib.loads(config_for(people)), "bench.toml")
        # The setup's connection holds SQLite's page cache: start the run afresh.
        engine.dispose()
        engine = make_engine(str(copy))
        rss_before = current_rss_mb()
        start = time.perf_counter()
        cpu_start = time.process_time()
        report = run(engine, config, now.astimezone(UTC))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        engine.dispose()
    figures = {
        "people": len(people),
        "messages_in_store": total,
        "messages_in_window": window,
        "due": report.due,
        "counts": report.counts,
        "failed": len(report.failures),
        "seconds": round(elapsed, 2),
        "cpu_seconds": round(cpu, 2),
        "people_per_s": round(len(people) / elapsed, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_at_start_mb": round(rss_before, 1),
    }
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
