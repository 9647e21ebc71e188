"""The daemon's scheduler: the only APScheduler (3.x) import.

Jobs run on the daemon's event loop; work that touches the database goes
through the store's writer thread: store upkeep, the outbox, and digest runs.
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
# Who is due is decided from each person's zone and last digest period, so
# a run every few minutes sends each digest close to its hour; a run late
# after downtime still sends one digest per person, never one per missed run.
DIGESTS_EVERY = timedelta(minutes=5)
# Copies quarantined because the store failed are retried when their backoff
# (`store.quarantine.retry_delay`) is over; this is how often that is checked.
QUARANTINE_RETRY_EVERY = timedelta(minutes=1)


def maintain(session: Session) -> None:
    """Forget expired sign-ins; let the database refresh its query-planner statistics."""
    from bridge.web.account.auth_store import purge_expired

    purge_expired(session, datetime.now(UTC))
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("PRAGMA optimize"))
    else:
        session.execute(text("ANALYZE"))


class Scheduler:
    """A daemon service (see `bridge.daemon.Service`) running periodic jobs."""

    name = "scheduler"

    def __init__(
        self,
        store: StoreRunner,
        mailer: Mailer | None = None,
        send_every: float = 30.0,
        config: Config | None = None,
    ) -> None:
        self.store = store
        self.mailer = mailer
        self.config = config
        self.runs = 0
        self.digest_runs = 0
        self._skipped_after: int | None = None  # unsubscribe mails read so far
        # The outbox job is running, and mail was queued after it claimed its batch.
        self._sending = False
        self._send_again = False
        if not log.isEnabledFor(logging.DEBUG):
            # APScheduler logs every run of every job at INFO ("Running job",
            # "executed successfully"): routine. From WARNING up (a missed run,
            # a job that raised) it is kept; --debug shows it all.
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
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
        self._scheduler.add_job(
            self.retry_quarantined,
            "interval",
            seconds=QUARANTINE_RETRY_EVERY.total_seconds(),
            id="quarantine-retry",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC) + timedelta(seconds=10),
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

        if config is not None and config.bridge.message_id_domain and config.bridge.address:
            self._scheduler.add_job(
                self.run_digests,
                "interval",
                seconds=DIGESTS_EVERY.total_seconds(),
                id="digests",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(DIGESTS_EVERY.total_seconds()),
                next_run_time=datetime.now(UTC) + timedelta(seconds=30),
            )

    async def run_digests(self) -> None:
        """Claim and enqueue the digests that are due (the outbox job sends them)."""
        from bridge.outbound.digest_run import run_async
        from bridge.outbound.digests import QUEUED

        assert self.config is not None
        try:
            report = await run_async(
                self.store, self.config, datetime.now(UTC), skipped_after=self._skipped_after
            )
            self._skipped_after = report.last_skipped_id
            self.digest_runs += 1
            for address in report.unsubscribed:
                log.info("digests for %r turned off by an unsubscribe mail", address)
            # INFO only when mail went out (or failed, below); a run with
            # nothing to send, or only empty digests, is routine.
            queued = report.counts.get(QUEUED, 0)
            log.log(
                logging.INFO if queued else logging.DEBUG,
                "digests: %s due, %s",
                report.due,
                report.counts,
            )
            for address, reason in report.failures:
                log.warning("digest for %r not sent: %s", address, reason)
        except Exception:  # a job failure is logged, the daemon goes on
            log.exception("the digest run failed")

    async def retry_quarantined(self, now: datetime | None = None) -> dict[str, int]:
        """Store again the `store-failed` copies whose retry time has come; count the outcomes."""
        from bridge import pipeline
        from bridge.store.bookkeeping import quarantine

        now = now or datetime.now(UTC)
        rules = self.config.ruleset if self.config is not None else None
        limits = self.config.limits.parse_limits() if self.config is not None else None
        tally: dict[str, int] = {}
        try:
            due = await self.store.read(lambda s: quarantine.due_for_retry(s, now))
        except Exception:  # a job failure is logged, the daemon goes on
            log.exception("reading the quarantine failed")
            return tally
        for ident in due:
            try:
                outcome, reason = await self.store.write(
                    lambda s, i=ident: pipeline.retry_quarantined(  # type: ignore[misc]
                        s, i, now, rules=rules, limits=limits
                    )
                )
            except Exception as exc:
                log.warning("quarantined copy %d: retry failed (%s)", ident, exc)
                outcome, reason = pipeline.Outcome.QUARANTINED, quarantine.STORE_FAILED
            if reason == quarantine.STORE_FAILED:
                try:
                    await self.store.write(lambda s, i=ident: quarantine.postpone(s, i, now))  # type: ignore[misc]
                except Exception as exc:  # the store is down: the next run tries again
                    log.warning("quarantined copy %d: not postponed (%s)", ident, exc)
            result = reason or outcome.value
            tally[result] = tally.get(result, 0) + 1
        # Copies stored or failing again are news; a run with none due is routine.
        log.log(
            logging.INFO if due else logging.DEBUG,
            "quarantine retry: %s",
            ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) or "none due",
        )
        return tally

    async def _send_mail(self) -> None:
        """Send what the outbox holds that is due (retries wait for their backoff)."""
        assert self.mailer is not None
        self._sending = True
        try:
            again = True
            while again:  # mail queued while a run was going goes out in one more run
                self._send_again = False
                await self.mailer.send_due(datetime.now(UTC))
                again = self._send_again
        except Exception:  # a job failure is logged, the daemon goes on
            log.exception("sending the outbox failed")
        finally:
            self._sending = False

    async def _maintenance(self) -> None:
        try:
            await self.store.write(maintain)
            self.runs += 1
            log.debug("store maintenance done")
        except Exception:  # a job failure is logged, the daemon goes on
            log.exception("store maintenance failed")

    def send_now(self) -> None:
        """Run the outbox job at once: mail a person just wrote goes out without waiting.

        Called from the event loop (a request handler) after the mail is
        committed. A run already going may have claimed its batch before
        this mail was committed, and the job never runs twice at once (a
        wake-up then would be skipped, leaving the mail to the next poll):
        that run goes round once more instead.
        """
        if self.mailer is None or not self._scheduler.running:
            return
        if self._sending:
            self._send_again = True
            return
        job = self._scheduler.get_job("outbox")
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def jobs(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    async def start(self) -> None:
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def reload(self, config: Config) -> None:
        # Spaces, defaults and the send hour take effect at the next digest run.
        if self.config is not None:
            self.config = config
