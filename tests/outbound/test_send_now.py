"""Mail queued while the outbox job is running goes out at once, not at the next poll."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import Engine

from bridge.outbound.scheduler import Scheduler
from bridge.store.runner import StoreRunner


class SlowMailer:
    """A mailer whose first run holds on until released, as a run talking to the relay."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def send_due(self, now: datetime) -> None:
        self.runs += 1
        if self.runs == 1:
            self.started.set()
            await self.release.wait()


async def test_mail_queued_during_a_run_goes_out_in_one_more_run(engine: Engine) -> None:
    store = StoreRunner(engine)
    mailer = SlowMailer()
    scheduler = Scheduler(store, mailer, send_every=3600.0)  # type: ignore[arg-type]
    await scheduler.start()
    try:
        await asyncio.wait_for(mailer.started.wait(), 10)  # the run at start
        scheduler.send_now()  # a reply committed after that run claimed its batch
        mailer.release.set()
        for _ in range(200):
            if mailer.runs >= 2:
                break
            await asyncio.sleep(0.01)
        assert mailer.runs == 2
        scheduler.send_now()  # no run going: the job is woken as before
        for _ in range(200):
            if mailer.runs >= 3:
                break
            await asyncio.sleep(0.01)
        assert mailer.runs == 3
    finally:
        await scheduler.stop()
        store.close()
