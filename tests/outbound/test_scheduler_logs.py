"""The scheduler's log: routine runs at DEBUG, INFO only for what a person acts on."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from bridge.config import parse_config
from bridge.core.message import Provenance, RawMessage
from bridge.outbound.scheduler import Scheduler
from bridge.pipeline import Outcome, Tally, prepare, store_alone
from bridge.store.runner import StoreRunner
from tests.smtp_support import fresh_copy, real_message

CONFIG = {"bridge": {"message_id_domain": "bridge.example.com", "address": "bridge@example.com"}}


async def run_every_job_once(scheduler: Scheduler) -> None:
    """Start the scheduler and have APScheduler run each job now, as its timer would."""
    ran: set[str] = set()
    jobs = {job.id for job in scheduler._scheduler.get_jobs()}
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED

    scheduler._scheduler.add_listener(
        lambda event: ran.add(event.job_id), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
    )
    await scheduler.start()
    try:
        for job in scheduler._scheduler.get_jobs():
            job.modify(next_run_time=datetime.now(UTC))
        scheduler._scheduler.wakeup()
        for _ in range(200):
            if ran >= jobs:
                break
            await asyncio.sleep(0.05)
        assert ran >= jobs == {"store-maintenance", "quarantine-retry", "digests"}
    finally:
        await scheduler.stop()


def shown(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= level]


async def every_job_once(engine: Engine, caplog: pytest.LogCaptureFixture, level: int) -> Scheduler:
    """A real scheduler on `engine`, each job run once, logs captured from `level`."""
    caplog.set_level(level)
    store = StoreRunner(engine)
    scheduler = Scheduler(store, None, config=parse_config(CONFIG, "bridge.toml"))
    try:
        await run_every_job_once(scheduler)
    finally:
        store.close()
    return scheduler


async def test_routine_runs_log_at_debug(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    scheduler = await every_job_once(engine, caplog, logging.INFO)
    assert scheduler.runs == 1 and scheduler.digest_runs == 1
    assert shown(caplog, logging.INFO) == []


async def test_routine_runs_show_with_debug(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    await every_job_once(engine, caplog, logging.DEBUG)
    lines = shown(caplog, logging.DEBUG)
    assert "bridge.outbound.scheduler: store maintenance done" in lines
    assert "bridge.outbound.scheduler: quarantine retry: none due" in lines
    assert "bridge.outbound.scheduler: digests: 0 due, {}" in lines
    assert shown(caplog, logging.INFO) == []


async def test_a_copy_stored_on_retry_is_news(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # A copy quarantined ten minutes ago because the store failed: due for retry.
    data, _ = fresh_copy(real_message(1), "scheduler-log")
    item = prepare(RawMessage(data, Provenance("smtp", "test", key="smtp:scheduler-log")))
    failed = replace(item, failure=("store-failed", "OperationalError: disk I/O error"))
    earlier = datetime.now(UTC) - timedelta(minutes=10)
    assert store_alone(engine, failed, earlier, Tally()) is Outcome.QUARANTINED
    caplog.clear()

    await every_job_once(engine, caplog, logging.INFO)
    assert shown(caplog, logging.INFO) == ["bridge.outbound.scheduler: quarantine retry: stored 1"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar_one() == 1
