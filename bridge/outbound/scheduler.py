"""The daemon's scheduler: the only APScheduler (3.x) import.

Jobs run on the daemon's event loop; work that touches the database goes
through the store's writer thread. Today it keeps the store in shape; digests
will be scheduled here too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.outbound.mailer import Mailer
from bridge.store.runner import StoreRunner

log = logging.getLogger(__name__)

MAINTENANCE_EVERY = timedelta(hours=1)


def maintain(session: Session) -> None:
    """Let SQLite refresh its query-planner statistics and fold the WAL back in."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA optimize"))
    else:
        session.execute(text("ANALYZE"))


class Scheduler:
    """A daemon service (see `bridge.daemon.Service`) running periodic jobs."""

    name = "scheduler"

    def __init__(
        self, store: StoreRunner, mailer: Mailer | None = None, send_every: float = 30.0
    ) -> None:
        self.store = store
        self.mailer = mailer
        self.runs = 0
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._maintenance,
            "interval",
            seconds=MAINTENANCE_EVERY.total_seconds(),
            id="store-maintenance",
            # Late runs after downtime happen once, not once per missed hour.
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC) + timedelta(minutes=1),
        )
        if mailer is not None:
            self._scheduler.add_job(
                self._send_mail,
                "interval",
                seconds=send_every,
                id="outbox",
                coalesce=True,
                max_instances=1,
                next_run_time=datetime.now(UTC),
            )

    async def _send_mail(self) -> None:
        """Send what the outbox holds that is due (retries wait for their backoff)."""
        assert self.mailer is not None
        try:
            await self.mailer.send_due(datetime.now(UTC))
        except Exception:  # a job failure is logged, the daemon goes on
            log.exception("sending the outbox failed")

    async def _maintenance(self) -> None:
        try:
            await self.store.write(maintain)
            self.runs += 1
        except Exception:  # a job failure is logged, the daemon goes on
            log.exception("store maintenance failed")

    def jobs(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    async def start(self) -> None:
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def reload(self, config: Config) -> None:
        return None
