"""`bridge import`: archives into the store, on every core, resumable.

Worker processes do the pure work (parse, split, hash, compress); this
process is the one writer. Each batch is one transaction holding the
messages and the checkpoint rows of the files it finished, so a Ctrl-C or a
`kill -9` loses at most the batch in flight, and running the import again
skips finished files and ends with the same store.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.core.admin_rules.rules import RuleSet
from bridge.core.mail.parse import ParseLimits
from bridge.core.message import RawMessage
from bridge.errors import StoreUnavailable
from bridge.ingest.owners import Owners
from bridge.ingest.sources import FileStamp, Found, Item, count_messages, discover, read_items
from bridge.store.blobs import (
    TRAINING_SAMPLES,
    Compressor,
    current_dictionary,
    dictionary_id,
    train_dictionary,
)
from bridge.store.db import is_transient, writer
from bridge.store.tables import CompressionDict, ImportedFile
from bridge.store.visibility.owners import record_owners

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
# Seconds between tries of a batch the store could not take (busy, away): about 45 s in all.
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0)
NO_OWNERS = Owners()


@dataclass
class ImportResult:
    """What an import did.

    `owners_recorded` counts the copies stored earlier that got owners now;
    `unowned` names the mailboxes an owners file left without an owner.
    """

    tally: pipeline.Tally
    files_total: int
    files_skipped: int
    seconds: float
    interrupted: bool = False
    owners_recorded: int = 0
    unowned: list[str] = field(default_factory=list)


def run_import(
    engine: Engine,
    paths: list[str],
    *,
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    rules: RuleSet | None = None,
    limits: ParseLimits | None = None,
    owners: Owners = NO_OWNERS,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ImportResult:
    """Import every message under `paths`; `progress(n)` is called as messages are stored.

    `stop()` is asked between batches: when it says yes, the batch in hand is
    stored and committed, and the import ends early (run it again to resume).
    Every copy is delivered to `owners.of(its mailbox)`; copies stored by an
    earlier import of the same files get those owners too.
    """
    started = time.monotonic()
    found = [replace(f, owners=owners.of(f.mailbox)) for f in discover(paths)]
    done = _finished_files(engine)
    todo = [f for f in found if done.get(f.stamp.path) != (f.stamp.size, f.stamp.mtime_ns)]
    if on_total is not None:
        on_total(count_messages(todo))
    tally = pipeline.Tally()
    compressor = Compressor(_dictionary(engine, todo, clock()))
    items = _items(todo)
    workers = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))
    with _pool(workers, compressor, rules, limits) as pool:
        interrupted = False
        pending = _submit(pool, _take(items, batch_size))
        while pending is not None:
            batch_items, future = pending
            prepared = future()
            interrupted = stop()
            # parse the next batch while this one is stored
            pending = None if interrupted else _submit(pool, _take(items, batch_size))
            _store(engine, batch_items, prepared, tally, clock())
            if progress is not None:
                progress(len(batch_items))
    result = ImportResult(tally, len(found), len(found) - len(todo), 0.0, interrupted)
    if owners and not interrupted:
        with Session(writer(engine)) as session, session.begin():
            owned = {str(f.path): f.owners for f in found if f.owners}
            result.owners_recorded = record_owners(session, "file", owned)
        result.unowned = owners.unowned(f.mailbox for f in found)
    result.seconds = time.monotonic() - started
    return result


def _finished_files(engine: Engine) -> dict[str, tuple[int, int]]:
    with Session(engine) as session:
        rows = session.execute(select(ImportedFile.path, ImportedFile.size, ImportedFile.mtime_ns))
        return {path: (size, mtime) for path, size, mtime in rows}


def _items(found: list[Found]) -> Iterator[Item]:
    for entry in found:
        try:
            yield from read_items(entry)
        except OSError as exc:
            log.error("%s: cannot read: %s", entry.path, exc)


def _take(items: Iterator[Item], size: int) -> list[Item]:
    return list(islice(items, size))


class _SerialPool:
    """Stands in for a process pool when one worker is asked for (and in tests)."""

    def map_async(self, fn: Callable, items: list) -> _Done:
        return _Done([fn(item) for item in items])

    def __enter__(self) -> _SerialPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Done:
    def __init__(self, value: list) -> None:
        self.value = value

    def get(self) -> list:
        return self.value


# What each worker process prepares messages with, set once when it starts.
_worker_compressor = Compressor()
_worker_rules: RuleSet | None = None
_worker_limits: ParseLimits | None = None


def _init_worker(compressor: Compressor, rules: RuleSet | None, limits: ParseLimits | None) -> None:
    global _worker_compressor, _worker_rules, _worker_limits
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the writer's to handle
    _worker_compressor = compressor
    _worker_rules = rules
    _worker_limits = limits


def _pool(
    workers: int, compressor: Compressor, rules: RuleSet | None, limits: ParseLimits | None
) -> Any:
    _init_worker(compressor, rules, limits)
    if workers <= 1:
        return _SerialPool()
    return multiprocessing.get_context("fork").Pool(
        workers, initializer=_init_worker, initargs=(compressor, rules, limits)
    )


def _prepare_raw(raw: RawMessage | None) -> pipeline.Prepared | None:
    if raw is None:
        return None
    return pipeline.prepare(raw, _worker_compressor, _worker_limits, rules=_worker_rules)


def _training_samples(todo: list[Found]) -> list[bytes]:
    """Messages spread evenly over the import, so every kind of mail shapes the dictionary."""
    per_file = 4
    step = max(1, len(todo) * per_file // TRAINING_SAMPLES)
    samples: list[bytes] = []
    for found in todo[::step]:
        for item in islice(_items([found]), per_file):
            if item.raw is not None:
                samples.append(item.raw.data)
        if len(samples) >= TRAINING_SAMPLES:
            break
    return samples


def _dictionary(engine: Engine, todo: list[Found], now: datetime) -> bytes | None:
    """The store's compression dictionary, trained on the first messages if it has none."""
    with writer(engine).begin() as conn:
        current = current_dictionary(conn)
        if current is not None:
            return current
        samples = [
            item.raw.data for item in islice(_items(todo), TRAINING_SAMPLES) if item.raw is not None
        ]
        trained = train_dictionary(samples)
        if trained is not None:
            conn.execute(
                insert(CompressionDict),
                [{"dict_id": dictionary_id(trained), "data": trained, "created_at": now}],
            )
        return trained


def _submit(pool: Any, batch: list[Item]) -> Any:
    if not batch:
        return None
    result = pool.map_async(_prepare_raw, [item.raw for item in batch])
    return batch, result.get


def _store(
    engine: Engine,
    batch: list[Item],
    prepared: list[pipeline.Prepared | None],
    tally: pipeline.Tally,
    now: datetime,
) -> None:
    """One transaction: the batch's messages and the checkpoints of the files it finished.

    A database that is busy or away (a daemon writing beside the import, a
    restart) is waited for: the batch is tried again, a few times, before
    the import stops with a one-line error (running it again resumes).
    """
    real = [p for p in prepared if p is not None]
    finished = [item.stamp for item in batch if item.last_in_file]
    engine = writer(engine)
    for attempt, pause in enumerate((*RETRY_PAUSES, None)):
        try:
            with Session(engine) as session, session.begin():
                batch_tally = pipeline.Tally()
                pipeline.store_batch(session, real, now, batch_tally)
                _checkpoint(session, finished, batch)
            break
        except Exception as exc:
            if not is_transient(exc):
                _store_one_by_one(engine, batch, real, finished, tally, now)
                return
            if pause is None:
                raise StoreUnavailable(_first_line(exc), attempt + 1) from None
            log.warning(
                "the store is busy (%s); batch tried again in %.1fs", _first_line(exc), pause or 0
            )
            time.sleep(pause)
    tally.outcomes.update(batch_tally.outcomes)
    tally.quarantine_reasons.update(batch_tally.quarantine_reasons)


def _store_one_by_one(
    engine: Engine,
    batch: list[Item],
    real: list[pipeline.Prepared],
    finished: list[FileStamp],
    tally: pipeline.Tally,
    now: datetime,
) -> None:
    """A bug or a constraint hit by one message must not cost the others:
    store them one by one, quarantining whichever fails."""
    log.warning("batch of %d failed; storing its messages one by one", len(real), exc_info=True)
    for item in real:
        pipeline.store_alone(engine, item, now, tally)
    with Session(engine) as session, session.begin():
        _checkpoint(session, finished, batch)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:200]


def _checkpoint(session: Session, finished: list[FileStamp], batch: list[Item]) -> None:
    if not finished:
        return
    paths = [stamp.path for stamp in finished]
    session.execute(delete(ImportedFile).where(ImportedFile.path.in_(paths)))
    session.execute(insert(ImportedFile), _stamps(finished, batch))


def _stamps(finished: list[FileStamp], batch: list[Item]) -> list[dict]:
    counts: dict[str, int] = {}
    for item in batch:
        if item.raw is not None:
            counts[item.stamp.path] = counts.get(item.stamp.path, 0) + 1
    return [
        {
            "path": stamp.path,
            "size": stamp.size,
            "mtime_ns": stamp.mtime_ns,
            "messages": counts.get(stamp.path, 0),
        }
        for stamp in finished
    ]
