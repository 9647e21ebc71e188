"""A database that cannot write for a moment answers 451; nothing is quarantined for it.

Another writer holds the store's write lock (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: `LOCK TABLE ... ACCESS EXCLUSIVE`) past the daemon's
`busy_timeout`: a message sent over SMTP must get 451 (the MTA retries), not
a 250 with the mail hidden in quarantine. Once the lock is gone the same
message is stored.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.store.db import make_engine
from tests.smtp_support import fresh_copy, real_message


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": database_url, "busy_timeout": 2.0},
        "smtp": {"domains": ["example.com"], "listeners": [{"port": 0}], "batch_wait": 0.001},
        "web": {"port": 0},
    }
    running = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await running.start()
    yield running
    await running.stop()


@contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Another process's writer, holding the lock until the block ends."""
    engine = make_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("COMMIT")  # leave the BEGIN the engine issued
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("LOCK TABLE raw_messages, quarantine IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def send(port: int, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail("sender@example.com")
        client.rcpt("alice@example.com")
        return client.data(data)


async def counts(daemon: Daemon) -> tuple[int, int]:
    def read(session: object) -> tuple[int, int]:
        stored = session.execute(text("SELECT count(*) FROM messages")).scalar_one()  # type: ignore[attr-defined]
        held = session.execute(text("SELECT count(*) FROM quarantine")).scalar_one()  # type: ignore[attr-defined]
        return int(stored), int(held)

    return await daemon.store.read(read)


async def test_a_locked_store_answers_451_and_quarantines_nothing(
    daemon: Daemon, database_url: str
) -> None:
    port = next(b.port for b in daemon.smtp_bound if b.protocol == "smtp")
    data, _ = fresh_copy(real_message(0), "locked")
    with write_lock(database_url):
        code, reply = await asyncio.to_thread(send, port, data)
    assert code == 451, reply
    assert await counts(daemon) == (0, 0)

    code, reply = await asyncio.to_thread(send, port, data)
    assert code == 250, reply
    assert await counts(daemon) == (1, 0)


async def test_a_lock_shorter_than_the_busy_timeout_is_waited_for(
    daemon: Daemon, database_url: str
) -> None:
    """Another writer holding the lock for 0.5 s delays the 250; it does not cause a 451."""
    port = next(b.port for b in daemon.smtp_bound if b.protocol == "smtp")
    data, _ = fresh_copy(real_message(2), "waited")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write_lock(database_url):
            locked.set()
            release.wait(0.5)

    holder = threading.Thread(target=hold)
    holder.start()
    locked.wait(10)
    code, reply = await asyncio.to_thread(send, port, data)
    holder.join()
    assert code == 250, reply
    assert await counts(daemon) == (1, 0)


async def test_store_failed_copies_are_retried_with_backoff(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy quarantined as `store-failed` waits 5 minutes, then 10 after a failed retry.

    While the store is locked a retry changes nothing (the next run tries
    again); a retry that fails for the message itself doubles the wait.
    """
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from bridge import pipeline
    from bridge.core.message import Provenance, RawMessage
    from bridge.outbound.scheduler import Scheduler
    from bridge.pipeline import Outcome, prepare, store_alone
    from bridge.pipeline import Tally as PipelineTally
    from bridge.store.runner import StoreRunner
    from bridge.store.tables import Quarantined

    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    data, _ = fresh_copy(real_message(1), "retry")
    item = prepare(RawMessage(data, Provenance("smtp", "test", key="smtp:retry")))
    failed = replace(item, failure=("store-failed", "OperationalError: disk I/O error"))
    engine = make_engine(database_url)
    assert store_alone(engine, failed, now, PipelineTally()) is Outcome.QUARANTINED

    def held() -> tuple[int, int, datetime | None, datetime | None]:
        with Session(engine) as session:
            stored = session.execute(text("SELECT count(*) FROM messages")).scalar_one()
            row = session.execute(select(Quarantined)).scalar_one()
            return int(stored), row.attempts, row.retry_at, row.released_at

    assert held() == (0, 0, now + timedelta(minutes=5), None)
    scheduler = Scheduler(StoreRunner(make_engine(database_url, busy_timeout=0.5)))
    assert await scheduler.retry_quarantined(now + timedelta(minutes=4)) == {}

    later = now + timedelta(minutes=5)
    with write_lock(database_url):
        await scheduler.retry_quarantined(later)  # fails, logged; the daemon goes on
    assert held() == (0, 0, now + timedelta(minutes=5), None)

    def still_failing(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the bug this message trips is not fixed yet")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "retry_quarantined", still_failing)
        assert await scheduler.retry_quarantined(later) == {"store-failed": 1}
    assert held() == (0, 1, later + timedelta(minutes=10), None)

    last = later + timedelta(minutes=10)
    assert await scheduler.retry_quarantined(last) == {"stored": 1}
    stored, attempts, _, released = held()
    assert (stored, attempts) == (1, 1) and released is not None
    scheduler.store.close()
    engine.dispose()
