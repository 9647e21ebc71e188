"""The access rule of `bridge.core.access`, asked of the store.

The rule is per message, so it is written once as a WHERE clause on
`messages` (`visible_condition`) and once as the union of the four ways a
message is granted (`visible_arms`), each found through an index:
`envelope_recipients.person_id` (delivered to them), `messages.sender_id`
and `recipients.person_id` (From, To, Cc name them), and
`messages(space, private, …)` (a space they read). Everything a reader is
shown of a thread (counts, dates, title, participants) is computed from the
messages these return, never from the thread row.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, Select, and_, false, or_, select
from sqlalchemy.orm import Session

from bridge.core.access import MessageFacts, Viewer, grants, normalize_address
from bridge.store.tables import Delivery, EnvelopeRecipient, Message, Person, Recipient, Thread

CHUNK = 500  # ids per IN (...): well under SQLite's bound-parameter limit
NAMING_KINDS = ("to", "cc")  # Bcc names nobody to the rule: a Bcc recipient holds a copy


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


def person_id(session: Session, address: str) -> int | None:
    """The people row of `address` (normalised), None when the store never saw it."""
    address = normalize_address(address)
    if not address:
        return None
    found = session.execute(select(Person.id).where(Person.address == address)).scalar()
    return None if found is None else int(found)


def visible_condition(session: Session, viewer: Viewer) -> ColumnElement[bool]:
    """The rule as a WHERE clause on `messages`."""
    pid = person_id(session, viewer.address)
    conditions: list[ColumnElement[bool]] = []
    if pid is not None:
        conditions.append(
            Message.id.in_(
                select(EnvelopeRecipient.message_pk).where(EnvelopeRecipient.person_id == pid)
            )
        )
        conditions.append(Message.sender_id == pid)
        conditions.append(
            Message.id.in_(
                select(Recipient.message_pk).where(
                    Recipient.person_id == pid, Recipient.kind.in_(NAMING_KINDS)
                )
            )
        )
    if viewer.spaces:
        conditions.append(
            and_(Message.space.in_(sorted(viewer.spaces)), Message.private.is_(False))
        )
    return or_(*conditions) if conditions else false()


def visible_arms(
    session: Session, viewer: Viewer, *columns: Any, thread_ids: list[int] | None = None
) -> CompoundSelect[Any] | None:
    """`columns` of every message the viewer may see, as a UNION of indexed selects.

    `columns` must include `Message.id` so a message granted twice is kept
    once. None when nothing can be granted (an unknown address, no spaces).
    """
    pid = person_id(session, viewer.address)
    arms: list[Select[Any]] = []
    if pid is not None:
        arms.append(
            select(*columns)
            .join(EnvelopeRecipient, EnvelopeRecipient.message_pk == Message.id)
            .where(EnvelopeRecipient.person_id == pid)
        )
        arms.append(select(*columns).where(Message.sender_id == pid))
        arms.append(
            select(*columns)
            .join(Recipient, Recipient.message_pk == Message.id)
            .where(Recipient.person_id == pid, Recipient.kind.in_(NAMING_KINDS))
        )
    if viewer.spaces:
        arms.append(
            select(*columns).where(
                Message.space.in_(sorted(viewer.spaces)), Message.private.is_(False)
            )
        )
    if not arms:
        return None
    if thread_ids is not None:
        arms = [arm.where(Message.thread_id.in_(thread_ids)) for arm in arms]
    # UNION, not UNION ALL: a message granted twice (or naming someone in both
    # To and Cc) is one row. A lone arm is united with itself for the same reason.
    return arms[0].union(*(arms[1:] or arms[:1]))


def visible_thread_ids(
    session: Session, viewer: Viewer, candidates: list[int] | None = None
) -> set[int]:
    """The threads holding a message the viewer may see, among `candidates` (all when None)."""
    if candidates is None:
        arms = visible_arms(session, viewer, Message.id, Message.thread_id)
        if arms is None:
            return set()
        sub = arms.subquery()
        return set(session.execute(select(sub.c.thread_id).distinct()).scalars())
    found: set[int] = set()
    condition = visible_condition(session, viewer)
    for part in _chunks(sorted(set(candidates))):
        query = select(Message.thread_id).where(Message.thread_id.in_(part), condition)
        found.update(session.execute(query.distinct()).scalars())
    return found


def visible_message_ids(session: Session, viewer: Viewer, thread_id: int) -> tuple[int, ...]:
    """The ids of the thread's messages the viewer may see, oldest first; () when none."""
    query = (
        select(Message.id)
        .where(Message.thread_id == thread_id, visible_condition(session, viewer))
        .order_by(Message.sort_date, Message.id)
    )
    return tuple(session.execute(query).scalars())


def visible_messages(session: Session, viewer: Viewer, thread_id: int) -> list[Message]:
    """The thread's messages the viewer may see, oldest first; [] when the thread is hidden.

    Callers answer 404 on [] exactly as for a missing thread.
    """
    query = (
        select(Message)
        .where(Message.thread_id == thread_id, visible_condition(session, viewer))
        .order_by(Message.sort_date, Message.id)
    )
    return list(session.execute(query).scalars())


def may_see_message(session: Session, viewer: Viewer, pk: int) -> bool:
    query = select(Message.id).where(Message.id == pk, visible_condition(session, viewer))
    return session.execute(query).first() is not None


def message_facts(session: Session, pks: list[int]) -> dict[int, MessageFacts]:
    """What the rule reads of each message: its holders, who it names, space, privacy."""
    holders: dict[int, set[str]] = defaultdict(set)
    named: dict[int, set[str]] = defaultdict(set)
    shape: dict[int, tuple[str | None, bool]] = {}
    for part in _chunks(sorted(set(pks))):
        rows = select(Message.id, Message.space, Message.private, Person.address).outerjoin(
            Person, Person.id == Message.sender_id
        )
        for pk, space, private, sender in session.execute(rows.where(Message.id.in_(part))):
            shape[pk] = (space, bool(private))
            if sender:
                named[pk].add(sender.lower())
        people = (
            select(Recipient.message_pk, Person.address)
            .join(Person, Person.id == Recipient.person_id)
            .where(Recipient.message_pk.in_(part), Recipient.kind.in_(NAMING_KINDS))
        )
        for pk, address in session.execute(people):
            named[pk].add(address.lower())
        delivered = (
            select(EnvelopeRecipient.message_pk, Person.address)
            .join(Person, Person.id == EnvelopeRecipient.person_id)
            .where(EnvelopeRecipient.message_pk.in_(part))
        )
        for pk, address in session.execute(delivered):
            holders[pk].add(address.lower())
    return {
        pk: MessageFacts(frozenset(holders[pk]), frozenset(named[pk]), space, private)
        for pk, (space, private) in shape.items()
    }


def grant_reasons(session: Session, viewer: Viewer, pks: list[int]) -> dict[int, tuple[str, ...]]:
    """Why the viewer may see each message (`core.access.grants`); () for hidden ones."""
    return {pk: grants(viewer, facts) for pk, facts in message_facts(session, pks).items()}


@dataclass(frozen=True, slots=True)
class ThreadView:
    """A thread as one reader sees it: everything here comes from their visible messages."""

    id: int
    subject: str
    space: str | None
    private: bool
    first_date: datetime | None
    last_date: datetime | None
    message_count: int
    sender_ids: tuple[int, ...]  # in order of their first visible message
    has_attachment: bool


def thread_views(session: Session, viewer: Viewer, thread_ids: list[int]) -> dict[int, ThreadView]:
    """Each thread as the viewer sees it; threads with no visible message are left out.

    The title is the thread's subject when its root is visible, else the
    subject of the oldest visible message; the space is that of the oldest
    visible message that has one.
    """
    wanted = sorted(set(thread_ids))
    if not wanted:
        return {}
    condition = visible_condition(session, viewer)
    roots = dict(
        session.execute(
            select(Thread.id, Thread.root_message_id).where(Thread.id.in_(wanted))
        ).all()
    )
    subjects = dict(
        session.execute(select(Thread.id, Thread.subject).where(Thread.id.in_(wanted))).all()
    )
    rows_by_thread: dict[int, list[Any]] = defaultdict(list)
    for part in _chunks(wanted):
        query = (
            select(
                Message.thread_id,
                Message.message_id,
                Message.subject,
                Message.date,
                Message.sort_date,
                Message.space,
                Message.private,
                Message.sender_id,
                Message.has_attachment,
            )
            .where(Message.thread_id.in_(part), condition)
            .order_by(Message.sort_date, Message.id)
        )
        for row in session.execute(query):
            rows_by_thread[row.thread_id].append(row)
    views: dict[int, ThreadView] = {}
    for tid, rows in rows_by_thread.items():
        root_visible = any(r.message_id == roots.get(tid) for r in rows)
        dates = [r.date for r in rows if r.date is not None]
        senders: dict[int, None] = {}
        for r in rows:
            if r.sender_id is not None:
                senders.setdefault(r.sender_id, None)
        views[tid] = ThreadView(
            id=tid,
            subject=subjects.get(tid, "") if root_visible else rows[0].subject,
            space=next((r.space for r in rows if r.space), None),
            private=any(r.private for r in rows),
            first_date=min(dates) if dates else None,
            last_date=max(r.sort_date for r in rows),
            message_count=len(rows),
            sender_ids=tuple(senders),
            has_attachment=any(r.has_attachment for r in rows),
        )
    return views


def reader_copy(session: Session, viewer: Viewer, pk: int) -> str | None:
    """The raw sha256 of a copy of message `pk` delivered to the viewer, if any.

    The newest such copy: the one they hold now. None when no copy was
    delivered to them (they read it through a header or a space).
    """
    address = normalize_address(viewer.address)
    if not address:
        return None
    rows = session.execute(
        select(Delivery.raw_sha256, Delivery.envelope_to)
        .where(Delivery.message_pk == pk)
        .order_by(Delivery.id.desc())
    ).all()
    for sha256, envelope_to in rows:
        if address in (line.strip().lower() for line in (envelope_to or "").split("\n")):
            return str(sha256)
    return None
