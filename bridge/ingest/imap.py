"""IMAP accounts: what the daemon wires, with one call per account or one for all.

    status = ImapStatus()
    store = SessionStore.from_runner(runner, loop, compressor)
    await run_imap(config.imap, store, status, stop)     # every account

Each account runs an `ImapWorker` in a thread of its own (imapclient is
synchronous); its batches reach the database through `SessionStore`, which
commits the messages and the folder's checkpoint in one transaction, on the
daemon's single writer when given a `StoreRunner`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.config import ImapAccount, ImapConfig
from bridge.core.message import RawMessage
from bridge.ingest.imap_status import AccountStatus, ImapStatus
from bridge.ingest.imap_sync import SOURCE, ImapStore, location
from bridge.ingest.imap_worker import ImapWorker
from bridge.pipeline import Outcome, Prepared
from bridge.store.blobs import Compressor
from bridge.store.bookkeeping.imap_state import (
    Checkpoint,
    delivered_here,
    load_checkpoint,
    save_checkpoint,
)
from bridge.store.db import is_transient
from bridge.store.runner import StoreRunner

__all__ = [
    "AccountStatus",
    "Checkpoint",
    "ImapStatus",
    "ImapStore",
    "ImapWorker",
    "SessionStore",
    "run_account",
    "run_imap",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Run = Callable[[Callable[[Session], Any]], Any]  # runs fn(session) in a transaction
Prepare = Callable[[Sequence[RawMessage]], list[Prepared]]
STOP_GRACE = 3.0  # seconds a worker gets to finish its batch before its socket is cut


class SessionStore:
    """`ImapStore` over two callables that run `fn(session)`: a read, and a committed write.

    `prepare` (the pure pipeline stages) runs in the calling worker thread;
    pass one that uses a process pool, or applies the admin rules, to change that.
    """

    def __init__(
        self,
        read: Run,
        write: Run,
        prepare: Prepare | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_stored: Callable[[Prepared, Outcome], object] | None = None,
    ) -> None:
        self._read = read
        self._write = write
        self._on_stored = on_stored
        self._prepare = prepare or (lambda raws: [pipeline.prepare(raw) for raw in raws])
        self._clock = clock

    @classmethod
    def from_engine(cls, engine: Engine, compressor: Compressor | None = None) -> SessionStore:
        """Writes in the calling thread: for tools, tests and single-account runs."""

        def read(fn: Callable[[Session], T]) -> T:
            with Session(engine) as session:
                return fn(session)

        def write(fn: Callable[[Session], T]) -> T:
            with Session(engine) as session, session.begin():
                return fn(session)

        return cls(read, write, _serial_prepare(compressor))

    @classmethod
    def from_runner(
        cls,
        runner: StoreRunner,
        loop: asyncio.AbstractEventLoop,
        compressor: Compressor | None = None,
        prepare: Prepare | None = None,
        on_stored: Callable[[Prepared, Outcome], object] | None = None,
    ) -> SessionStore:
        """Writes on the daemon's one writer thread, called from a worker thread."""

        def read(fn: Callable[[Session], T]) -> T:
            return asyncio.run_coroutine_threadsafe(runner.read(fn), loop).result()

        def write(fn: Callable[[Session], T]) -> T:
            return asyncio.run_coroutine_threadsafe(runner.write(fn), loop).result()

        return cls(read, write, prepare or _serial_prepare(compressor), on_stored=on_stored)

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        result: Checkpoint | None = self._read(lambda s: load_checkpoint(s, account, folder))
        return result

    def store(self, raws: Sequence[RawMessage], checkpoint: Checkpoint) -> list[Outcome]:
        """Store `raws` and move `checkpoint` forward, in one transaction.

        A message this folder already delivered under an earlier UIDVALIDITY
        is not stored again (Outcome.SEEN). If the batch fails as a whole, its
        messages are stored one by one and whichever fails is quarantined.
        """
        items = self._prepare(raws)
        now = self._clock()
        where = location(checkpoint.account, checkpoint.folder)

        def write(session: Session) -> list[Outcome]:
            outcomes = self._store_new(session, items, where, now)
            save_checkpoint(session, checkpoint, now)
            return outcomes

        try:
            result: list[Outcome] = self._write(write)
            self._report(items, result)
            return result
        except Exception:
            log.exception(
                "imap %s/%s: batch of %d failed; storing one by one",
                checkpoint.account,
                checkpoint.folder,
                len(items),
            )
        outcomes = [self._store_alone(item, where, now) for item in items]
        self._write(lambda s: save_checkpoint(s, checkpoint, now))
        self._report(items, outcomes)
        return outcomes

    def _report(self, items: Sequence[Prepared], outcomes: Sequence[Outcome]) -> None:
        if self._on_stored is not None:
            for item, outcome in zip(items, outcomes, strict=True):
                self._on_stored(item, outcome)

    def _store_new(
        self, session: Session, items: Sequence[Prepared], where: str, now: datetime
    ) -> list[Outcome]:
        ids = [item.message_id for item in items if item.message_id]
        here = delivered_here(session, SOURCE, where, ids) if ids else set()
        todo = [item for item in items if item.message_id not in here]
        stored = iter(pipeline.store_batch(session, todo, now) if todo else [])
        return [Outcome.SEEN if item.message_id in here else next(stored) for item in items]

    def _store_alone(self, item: Prepared, where: str, now: datetime) -> Outcome:
        try:
            result: Outcome = self._write(lambda s: self._store_new(s, [item], where, now)[0])
            return result
        except Exception as exc:
            if is_transient(exc):
                raise  # not checkpointed: the next sync fetches it again
            log.exception("<%s> store failed", item.message_id)
            failed = replace(item, failure=("store-failed", f"{type(exc).__name__}: {exc}"[:500]))
            quarantined: Outcome = self._write(lambda s: pipeline.store_batch(s, [failed], now)[0])
            return quarantined


def _serial_prepare(compressor: Compressor | None) -> Prepare:
    return lambda raws: [pipeline.prepare(raw, compressor) for raw in raws]


async def run_account(
    account: ImapAccount,
    store: ImapStore,
    status: AccountStatus,
    stop: asyncio.Event,
    backoff_max: float = 300.0,
    login_backoff: tuple[float, float] = (300.0, 3600.0),
) -> None:
    """Run one account's worker thread until `stop` is set; returns once it has finished.

    The store's writes go through this loop, so keep it running (and the
    StoreRunner open) until this returns.
    """
    loop = asyncio.get_running_loop()
    worker = ImapWorker(account, store, status, backoff_max, login_backoff=login_backoff)
    halt = threading.Event()
    finished: asyncio.Future[Any] = loop.create_future()

    def target() -> None:
        try:
            worker.run(halt)
        finally:
            loop.call_soon_threadsafe(_resolve, finished)

    thread = threading.Thread(target=target, name=f"imap-{account.name}", daemon=True)
    thread.start()
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({finished, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.set()
        stopping.cancel()
        done, _ = await asyncio.wait({finished}, timeout=STOP_GRACE)
        if not done:  # blocked in a read: cut the socket, the batch is simply not committed
            worker.interrupt()
        await asyncio.shield(finished)


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


async def run_imap(
    config: ImapConfig, store: ImapStore, status: ImapStatus, stop: asyncio.Event
) -> None:
    """Every configured account, each in its own thread, until `stop` is set."""
    await asyncio.gather(
        *(
            run_account(
                account,
                store,
                status.account(account.name),
                stop,
                config.backoff_max,
                (config.login_backoff, config.login_backoff_max),
            )
            for account in config.accounts
        )
    )
