"""Per reader: what they read of each thread, and the threads they follow or mute.

Unread is counted over the messages the reader may see (the access rule of
`bridge.store.visibility.access`) and did not write themselves, that arrived
(`messages.arrival`, a store-wide counter) after the later of their mark on
the thread (`thread_marks.read_upto`, set when they open it) and their
"mark all read" (`reader_marks.read_upto`). So a message hidden from the
reader never moves their count, never carries the first-unread anchor and
never lends its tags to what they are shown. A message they may see only
later (a new copy delivered to them) keeps its arrival: it is not unread.

Marks name a thread by its id when they were made; a thread that joins
another starts unread again under the id it joined.

Plain sync functions taking a Session; they never commit. Every change
moves the reader's `version`, which keys their kept listing pages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, normalize_address
from bridge.store.db import insert_ignore
from bridge.store.tables import Message, ReaderMark, ThreadMark, table
from bridge.store.visibility.access import person_id, visible_arms, visible_condition

FOLLOW, MUTE, NO_WATCH = "follow", "mute", ""
WATCHES = (FOLLOW, MUTE, NO_WATCH)
CHUNK = 500
MAX_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ThreadState:
    """A thread as one reader's marks make it: all of it from messages they may see."""

    unread: int = 0
    unread_pks: tuple[int, ...] = ()  # oldest first
    tags: tuple[str, ...] = ()  # the rule tags of their visible messages, sorted
    watch: str = NO_WATCH
    newest: int = 0  # arrival of the newest message they may see
    read_upto: int = 0  # what counts as read: the later of the two marks


def _ids(thread_ids: Iterable[int]) -> list[int]:
    return sorted({t for t in thread_ids if 0 < t <= MAX_ID})


def _everything_upto(session: Session, address: str) -> int:
    found = session.execute(
        select(ReaderMark.read_upto).where(ReaderMark.address == address)
    ).scalar()
    return int(found or 0)


def version(session: Session, address: str) -> int:
    """Moves with every change of the reader's marks (part of their kept pages' keys)."""
    found = session.execute(
        select(ReaderMark.version).where(ReaderMark.address == normalize_address(address))
    ).scalar()
    return int(found or 0)


def thread_state_of(
    session: Session, viewer: Viewer, thread_id: int, seen: Iterable[int]
) -> ThreadState | None:
    """`thread_states` of one thread whose visible messages `seen` the caller already knows."""
    pks = sorted(seen)
    address = normalize_address(viewer.address)
    if not pks or not address:
        return None
    mark = session.execute(
        select(ThreadMark.read_upto, ThreadMark.watch).where(
            ThreadMark.address == address, ThreadMark.thread_id == thread_id
        )
    ).first()
    rows = [
        row
        for part in [pks[i : i + CHUNK] for i in range(0, len(pks), CHUNK)]
        for row in session.execute(
            select(Message.id, Message.arrival, Message.sender_id, Message.tags).where(
                Message.id.in_(part)
            )
        )
    ]
    upto = (int(mark.read_upto or 0), mark.watch or NO_WATCH) if mark is not None else (0, NO_WATCH)
    order = {pk: i for i, pk in enumerate(seen)}
    rows.sort(key=lambda r: order.get(r.id, 0))
    return _state(rows, upto, _everything_upto(session, address), person_id(session, address))


def _state(rows: list[Any], mark: tuple[int, str], everything: int, pid: int | None) -> ThreadState:
    """One thread's state from its visible rows (oldest first) and the reader's marks."""
    upto, watch = max(mark[0], everything), mark[1]
    unread = tuple(r.id for r in rows if r.arrival > upto and (pid is None or r.sender_id != pid))
    tags = sorted({t for r in rows for t in (r.tags or "").split(",") if t})
    return ThreadState(
        unread=len(unread),
        unread_pks=unread,
        tags=tuple(tags),
        watch=watch,
        newest=max(int(r.arrival) for r in rows),
        read_upto=upto,
    )


def thread_states(
    session: Session, viewer: Viewer, thread_ids: Iterable[int]
) -> dict[int, ThreadState]:
    """Unread count, first unread messages, tags and watch of each thread the viewer may see.

    Threads with no message the viewer may see are left out.
    """
    wanted = _ids(thread_ids)
    address = normalize_address(viewer.address)
    if not wanted or not address:
        return {}
    pid = person_id(session, address)
    everything = _everything_upto(session, address)
    marks: dict[int, tuple[int, str]] = {}
    rows_by_thread: dict[int, list[Any]] = defaultdict(list)
    condition = visible_condition(session, viewer)
    for part in [wanted[i : i + CHUNK] for i in range(0, len(wanted), CHUNK)]:
        for tid, upto, watch in session.execute(
            select(ThreadMark.thread_id, ThreadMark.read_upto, ThreadMark.watch).where(
                ThreadMark.address == address, ThreadMark.thread_id.in_(part)
            )
        ):
            marks[tid] = (int(upto or 0), watch or NO_WATCH)
        query = (
            select(Message.id, Message.thread_id, Message.arrival, Message.sender_id, Message.tags)
            .where(Message.thread_id.in_(part), condition)
            .order_by(Message.sort_date, Message.id)
        )
        for row in session.execute(query):
            rows_by_thread[row.thread_id].append(row)
    return {
        tid: _state(rows, marks.get(tid, (0, NO_WATCH)), everything, pid)
        for tid, rows in rows_by_thread.items()
    }


def muted_threads(address: str) -> Select[Any]:
    """The ids of the threads `address` muted, as a subquery for listings."""
    return select(ThreadMark.thread_id).where(
        ThreadMark.address == normalize_address(address), ThreadMark.watch == MUTE
    )


def watches(session: Session, addresses: Iterable[str]) -> dict[str, dict[int, str]]:
    """Each person's followed and muted threads (thread id → "follow" | "mute")."""
    wanted = sorted({normalize_address(a) for a in addresses if a})
    found: dict[str, dict[int, str]] = defaultdict(dict)
    for i in range(0, len(wanted), CHUNK):
        for address, tid, watch in session.execute(
            select(ThreadMark.address, ThreadMark.thread_id, ThreadMark.watch).where(
                ThreadMark.address.in_(wanted[i : i + CHUNK]), ThreadMark.watch != NO_WATCH
            )
        ):
            found[address][tid] = watch
    return dict(found)


def _bump(session: Session, address: str, now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    row = {"address": address, "read_upto": 0, "version": 0, "updated_at": now}
    session.execute(insert_ignore(dialect, table(ReaderMark)), [row])
    session.execute(
        update(ReaderMark)
        .where(ReaderMark.address == address)
        .values(version=ReaderMark.version + 1, updated_at=now)
    )


def _ensure_mark(session: Session, address: str, thread_id: int, now: datetime) -> None:
    dialect = session.get_bind().dialect.name
    row = {
        "address": address,
        "thread_id": thread_id,
        "read_upto": 0,
        "watch": NO_WATCH,
        "updated_at": now,
    }
    session.execute(insert_ignore(dialect, table(ThreadMark)), [row])


def mark_read(session: Session, address: str, thread_id: int, upto: int, now: datetime) -> bool:
    """The reader has read the thread up to arrival `upto`; False when that was known.

    `upto` comes from `thread_states(...).newest`, read when the page was:
    a message that arrives meanwhile stays unread. A mark never goes back.
    """
    address = normalize_address(address)
    if not address or not 0 < thread_id <= MAX_ID or upto <= 0:
        return False
    _ensure_mark(session, address, thread_id, now)
    changed = session.execute(
        update(ThreadMark)
        .where(
            ThreadMark.address == address,
            ThreadMark.thread_id == thread_id,
            ThreadMark.read_upto < upto,
        )
        .values(read_upto=upto, updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if changed:
        _bump(session, address, now)
    return bool(changed)


def mark_all_read(session: Session, viewer: Viewer, now: datetime) -> int:
    """Everything the viewer may see now is read; the arrival it was read up to."""
    address = normalize_address(viewer.address)
    arms = visible_arms(session, viewer, Message.id, Message.arrival)
    if not address or arms is None:
        return 0
    sub = arms.subquery()
    upto = int(session.execute(select(func.max(sub.c.arrival))).scalar() or 0)
    _bump(session, address, now)
    session.execute(
        update(ReaderMark)
        .where(ReaderMark.address == address, ReaderMark.read_upto < upto)
        .values(read_upto=upto)
    )
    return upto


def may_see_thread(session: Session, viewer: Viewer, thread_id: int) -> bool:
    """Whether the thread holds a message the viewer may see (missing: False, the same way)."""
    thread_id = thread_id if 0 < thread_id <= MAX_ID else 0
    query = select(Message.id).where(
        Message.thread_id == thread_id, visible_condition(session, viewer)
    )
    return session.execute(query.limit(1)).first() is not None


def set_watch(session: Session, viewer: Viewer, thread_id: int, watch: str, now: datetime) -> bool:
    """Follow, mute or neither; False (and nothing written) when the viewer may not see it.

    A hidden thread answers exactly like a missing one: the caller says 404.
    """
    if watch not in WATCHES:
        raise ValueError(f"watch has value {watch!r}: not one of follow, mute, ''")
    address = normalize_address(viewer.address)
    if not may_see_thread(session, viewer, thread_id) or not address:
        return False
    _ensure_mark(session, address, thread_id, now)
    session.execute(
        update(ThreadMark)
        .where(ThreadMark.address == address, ThreadMark.thread_id == thread_id)
        .values(watch=watch, updated_at=now)
    )
    _bump(session, address, now)
    return True
