"""Group commit: concurrent live deliveries share one transaction and one fsync.

A listener must not answer `250` before the message is on disk, and one
fsync'd transaction per message caps SQLite at a few dozen messages a second.
So each delivery is prepared (parsed, split, compressed) in a thread, queued,
and a single task stores whatever is queued (up to `max_batch`, waiting at
most `max_wait` seconds for company) in one transaction on the store's
writer; only after that commit does each waiter learn its outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

from bridge import pipeline
from bridge.core.admin_rules.rules import RuleSet
from bridge.core.mail.parse import ParseLimits
from bridge.core.message import LoadRaw, RawMessage
from bridge.store.blobs import Compressor
from bridge.store.db import is_transient
from bridge.store.runner import StoreRunner

log = logging.getLogger(__name__)

OnStored = Callable[[pipeline.Prepared, pipeline.Outcome], None]
_Waiter = tuple[pipeline.Prepared, "asyncio.Future[pipeline.Outcome]"]


class GroupCommit:
    def __init__(
        self,
        store: StoreRunner,
        compressor: Compressor,
        *,
        max_batch: int = 64,
        max_wait: float = 0.005,
        on_stored: OnStored | None = None,
        prepare_threads: int = 2,
        rules: Callable[[], RuleSet | None] = lambda: None,
        limits: Callable[[], ParseLimits | None] = lambda: None,
    ) -> None:
        self.store = store
        self.compressor = compressor
        self.rules = rules  # asked for each message, so a reload applies at once
        self.limits = limits
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_stored = on_stored
        self._pool = ThreadPoolExecutor(prepare_threads, thread_name_prefix="prepare")
        # Large messages are prepared one at a time on their own thread: parsing
        # takes several times a message's size, and under the GIL a second one at
        # once gains little; small messages never queue behind them.
        self._large_pool = ThreadPoolExecutor(1, thread_name_prefix="prepare-large")
        self._queue: asyncio.Queue[_Waiter | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.stored = 0
        # Set while the store refuses writes (disk full, database away): since when, and why.
        self.failing: tuple[datetime, str] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("the group committer stopped: %s", exc, exc_info=exc)

    async def submit(self, raw: RawMessage | LoadRaw) -> pipeline.Outcome:
        """Prepare and store `raw`; returns once it is committed (or raises)."""
        if self._task is None or self._task.done():
            raise RuntimeError("the group committer is not running")
        loop = asyncio.get_running_loop()
        pool = self._pool if isinstance(raw, RawMessage) else self._large_pool
        prepared = await loop.run_in_executor(pool, self.prepare, raw)
        future: asyncio.Future[pipeline.Outcome] = loop.create_future()
        self._queue.put_nowait((prepared, future))
        # shield: a client hanging up mid-commit must not cancel the commit for others
        return await asyncio.shield(future)

    def prepare(self, raw: RawMessage | LoadRaw) -> pipeline.Prepared:
        """`pipeline.prepare` with the current rules and limits: safe from any thread."""
        if not isinstance(raw, RawMessage):
            raw = raw()
        return pipeline.prepare(raw, self.compressor, limits=self.limits(), rules=self.rules())

    async def close(self) -> None:
        """Store everything queued, then stop."""
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task
        self._pool.shutdown(wait=True)
        self._large_pool.shutdown(wait=True)

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._take(batch)
            if not stopping and len(batch) < self.max_batch and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
                stopping = self._take(batch)
            await self._store(batch)

    def _take(self, batch: list[_Waiter]) -> bool:
        """Move queued items into `batch`; True when the stop marker was seen."""
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    async def _store(self, batch: list[_Waiter]) -> None:
        items = [item for item, _ in batch]
        now = datetime.now(UTC)
        try:
            outcomes = await self.store.write(lambda s: pipeline.store_batch(s, items, now))
        except Exception as exc:
            if is_transient(exc):
                # The database, not a message: every sender gets 451 and retries.
                log.error("storing a batch of %d failed: %s", len(items), _describe(exc))
                self._failed(exc)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            log.exception("storing a batch of %d failed; storing one by one", len(items))
            for waiter in batch:
                await self._store_alone(waiter, now)
            return
        self.batches += 1
        for (item, future), outcome in zip(batch, outcomes, strict=True):
            self._done(item, future, outcome)

    async def _store_alone(self, waiter: _Waiter, now: datetime) -> None:
        item, future = waiter
        try:
            outcome = (await self.store.write(lambda s: pipeline.store_batch(s, [item], now)))[0]
        except Exception as exc:
            if is_transient(exc):
                log.error("<%s> store failed: %s", item.message_id, _describe(exc))
                self._failed(exc)
                if not future.done():
                    future.set_exception(exc)
                return
            log.exception("<%s> store failed; quarantining", item.message_id)
            failed = replace(item, failure=("store-failed", f"{type(exc).__name__}: {exc}"[:500]))
            try:
                outcome = (
                    await self.store.write(lambda s: pipeline.store_batch(s, [failed], now))
                )[0]
            except Exception as again:
                log.exception("<%s> quarantine failed too", item.message_id)
                if not future.done():
                    future.set_exception(again)
                return
        self._done(item, future, outcome)

    def _failed(self, exc: BaseException) -> None:
        if self.failing is None:
            self.failing = (datetime.now(UTC), _describe(exc))

    def _done(
        self,
        item: pipeline.Prepared,
        future: asyncio.Future[pipeline.Outcome],
        outcome: pipeline.Outcome,
    ) -> None:
        self.stored += 1
        self.failing = None
        prov = item.raw.provenance
        log.info(
            "<%s> %s %s from %s for %s",
            item.message_id,
            prov.source,
            outcome.value,
            prov.envelope_from or "<>",
            ",".join(prov.envelope_to),
        )
        if self.on_stored is not None:
            self.on_stored(item, outcome)
        if not future.done():
            future.set_result(outcome)


def _describe(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:300]
