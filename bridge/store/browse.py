"""What the viewer, its API and its feeds read: threads and messages a reader may see.

Plain sync functions taking a Session and a `Viewer`; they return frozen
values, never ORM objects, and never commit. Every one of them applies the
access rule (`bridge.store.access`): something the reader may not see is
answered exactly like something missing (None, or absent from a list).

Listings page and count in SQL: the rule is a WHERE clause on `threads`
(`visible_condition`) ordered by the indexed `threads.last_date`, so a
page costs the same however many threads the store holds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, column, func, select, text, true
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, may_see_message, normalize_address
from bridge.core.normalize import normalize_message_id
from bridge.core.parse import attachment_data, attachment_parts
from bridge.store.access import (
    message_parties,
    party_thread_ids,
    visible_condition,
    visible_messages,
)
from bridge.store.access_sql import viewer_clause
from bridge.store.blobs import unpack_body_with_raw
from bridge.store.reading import raw_bytes
from bridge.store.tables import (
    Attachment,
    Delivery,
    Message,
    MessageId,
    Person,
    RawBlob,
    Recipient,
    Thread,
)
from bridge.store.threading_store import resolve_thread_id as _resolve

SHOWN_PARTICIPANTS = 6  # names shown in a listing row; the rest are counted
MAX_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL: larger ones name nothing


@dataclass(frozen=True, slots=True)
class PersonRef:
    name: str
    address: str

    @property
    def label(self) -> str:
        return self.name or self.address


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    """One row of a listing; counts and names cover only what the reader may see."""

    id: int
    subject: str
    space: str | None
    private: bool
    first_date: datetime | None
    last_date: datetime | None
    message_count: int
    participants: tuple[PersonRef, ...]  # senders, first to write first
    more_participants: int  # senders not in `participants`
    has_attachment: bool


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    position: int
    filename: str
    content_type: str
    size: int
    inline: bool
    content_id: str | None  # for `cid:` images in the message's HTML


@dataclass(frozen=True, slots=True)
class MessageDetail:
    pk: int
    message_id: str
    parent_pk: int | None  # the nearest ancestor the reader may see
    depth: int  # in the reply tree, 0 for a root
    date: datetime | None
    sender: PersonRef | None
    to: tuple[PersonRef, ...]
    cc: tuple[PersonRef, ...]
    subject: str
    new_text: str
    quoted_text: str
    signature: str
    html: str | None  # sanitised at import (bridge.core.html); remote images not loaded
    attachments: tuple[AttachmentInfo, ...]
    flags: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ThreadDetail:
    id: int
    subject: str
    space: str | None
    private: bool
    first_date: datetime | None
    last_date: datetime | None
    messages: tuple[MessageDetail, ...]  # tree order: depth first, siblings by date
    participants: tuple[PersonRef, ...]  # senders, To and Cc of the visible messages

    def by_date(self) -> list[MessageDetail]:
        """The flat view: oldest first, undated last."""
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(self.messages, key=lambda m: (m.date or far, m.pk))


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _person_id(session: Session, address: str) -> int | None:
    found: int | None = session.execute(
        select(Person.id).where(Person.address == normalize_address(address))
    ).scalar()
    return found


def _appears_in(session: Session, viewer: Viewer, pid: int, *, received: bool) -> Any:
    """Threads where person `pid` wrote (or was sent, To/Cc) a message the viewer may see.

    Filtering by person must not reveal that someone took part through a
    message hidden from the reader, so the message-level rule applies here.
    """
    params: dict[str, Any] = {"who": pid}
    appears = "m.sender_id = :who"
    if received:
        appears += (
            " OR EXISTS (SELECT 1 FROM recipients pr WHERE pr.message_pk = m.id"
            " AND pr.person_id = :who AND pr.kind <> 'bcc')"
        )
    clause = viewer_clause(session, viewer, params)
    sql = f"SELECT m.thread_id FROM messages m WHERE ({appears}){clause}"
    return text(sql).bindparams(**params).columns(column("thread_id", Integer))


def _listing_filters(
    session: Session,
    viewer: Viewer,
    *,
    space: str | None,
    person: str | None,
    participant: str | None,
    has_attachment: bool | None,
    after: datetime | None,
    before: datetime | None,
) -> list[ColumnElement[bool]] | None:
    """WHERE clauses for the listing filters; None when a filter can match nothing."""
    where: list[ColumnElement[bool]] = []
    if space is not None:
        where.append(Thread.space == space)
    if person is not None:
        pid = _person_id(session, person)
        if pid is None:
            return None
        where.append(Thread.id.in_(_appears_in(session, viewer, pid, received=True)))
    if participant is not None:
        pid = _person_id(session, participant)
        if pid is None:
            return None
        where.append(Thread.id.in_(_appears_in(session, viewer, pid, received=False)))
    if has_attachment is not None:
        with_files = select(Message.thread_id).where(Message.has_attachment.is_(True))
        where.append(Thread.id.in_(with_files) if has_attachment else Thread.id.not_in(with_files))
    if after is not None:
        where.append(Thread.last_date >= after)
    if before is not None:
        where.append(Thread.last_date < before)
    return where


def thread_summaries(
    session: Session,
    viewer: Viewer,
    *,
    space: str | None = None,
    person: str | None = None,
    participant: str | None = None,
    has_attachment: bool | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ThreadSummary], int]:
    """Threads the viewer may see, latest activity first, and how many there are in all.

    `space`: threads in that space. `person`: threads the address wrote in or
    was sent (To/Cc). `participant`: threads the address wrote in. `after` /
    `before`: last activity at or after / before these instants.
    """
    where = _listing_filters(
        session,
        viewer,
        space=space,
        person=person,
        participant=participant,
        has_attachment=has_attachment,
        after=after,
        before=before,
    )
    if where is None:
        return [], 0
    condition = visible_condition(session, viewer)
    for clause in where:
        condition = condition & clause
    total = session.execute(select(func.count()).select_from(Thread).where(condition)).scalar()
    rows = list(
        session.execute(
            select(Thread)
            .where(condition)
            .order_by(Thread.last_date.desc().nulls_last(), Thread.id.desc())
            .limit(max(0, limit))
            .offset(max(0, offset))
        ).scalars()
    )
    return summarize(session, viewer, rows), int(total or 0)


def summaries_for(session: Session, viewer: Viewer, thread_ids: list[int]) -> list[ThreadSummary]:
    """Summaries of the given threads (in that order) the viewer may see; others are left out."""
    if not thread_ids:
        return []
    allowed = visible_condition(session, viewer, sorted(set(thread_ids)))
    found = {
        t.id: t
        for t in session.execute(
            select(Thread).where(Thread.id.in_(sorted(set(thread_ids))), allowed)
        ).scalars()
    }
    return summarize(session, viewer, [found[t] for t in thread_ids if t in found])


def summarize(session: Session, viewer: Viewer, threads: list[Thread]) -> list[ThreadSummary]:
    """Listing rows for threads already known to be visible: counts over visible messages."""
    if not threads:
        return []
    by_id = {t.id: t for t in threads}
    party = party_thread_ids(session, viewer, list(by_id))
    rows = session.execute(
        select(
            Message.id,
            Message.thread_id,
            Message.space,
            Message.private,
            Message.sender_id,
            Message.has_attachment,
        )
        .where(Message.thread_id.in_(list(by_id)))
        .order_by(Message.sort_date, Message.id)
    ).all()
    # Only messages the rule may hide need their parties looked up.
    doubtful = [
        pk
        for pk, tid, space, private, _s, _a in rows
        if not _plainly_visible(viewer, space, private, by_id[tid], tid in party)
    ]
    parties = message_parties(session, doubtful) if doubtful else {}
    counts: dict[int, int] = defaultdict(int)
    senders: dict[int, list[int]] = defaultdict(list)
    files: set[int] = set()
    for pk, tid, space, private, sender_id, attached in rows:
        thread = by_id[tid]
        plain = _plainly_visible(viewer, space, private, thread, tid in party)
        if not plain and not may_see_message(
            viewer,
            parties.get(pk, set()),
            space,
            private,
            thread.space,
            thread.private,
            thread_party=tid in party,
        ):
            continue
        counts[tid] += 1
        if attached:
            files.add(tid)
        if sender_id is not None and sender_id not in senders[tid]:
            senders[tid].append(sender_id)
    wanted = {s for ids in senders.values() for s in ids[:SHOWN_PARTICIPANTS]}
    people = {
        pid: PersonRef(name or "", address)
        for pid, address, name in session.execute(
            select(Person.id, Person.address, Person.name).where(Person.id.in_(sorted(wanted)))
        )
    }
    return [
        ThreadSummary(
            id=t.id,
            subject=t.subject,
            space=t.space,
            private=t.private,
            first_date=_aware(t.first_date),
            last_date=_aware(t.last_date),
            message_count=counts[t.id],
            participants=tuple(people[s] for s in senders[t.id][:SHOWN_PARTICIPANTS]),
            more_participants=max(0, len(senders[t.id]) - SHOWN_PARTICIPANTS),
            has_attachment=t.id in files,
        )
        for t in threads
    ]


def _plainly_visible(
    viewer: Viewer, space: str | None, private: bool, thread: Thread, party: bool
) -> bool:
    """True when `may_see_message` holds whoever the message's parties are."""
    if thread.private or private:
        return False
    if not party and (thread.space is None or thread.space not in viewer.spaces):
        return False
    return space is None or space == thread.space or space in viewer.spaces


def find_person(session: Session, address: str) -> PersonRef | None:
    """A person known to the store, by address (no access check: callers check threads)."""
    row = session.execute(
        select(Person.name, Person.address).where(Person.address == normalize_address(address))
    ).first()
    return PersonRef(row[0] or "", row[1]) if row is not None else None


def resolve_thread_id(session: Session, thread_id: int) -> int | None:
    """The current id of a thread (following merges), None when unknown. No access check."""
    if not 0 < thread_id <= MAX_ID:
        return None
    return _resolve(session, thread_id)


def thread_stamp(session: Session, thread_id: int) -> tuple[Any, ...] | None:
    """What changes whenever the thread's page would: its row and its newest delivery.

    Every stored copy is a delivery, so a new message, a merged copy (which
    may bring a rule's decision) or a joined thread all move it. No access
    check: the stamp is only part of a cache key.
    """
    row = session.execute(
        select(
            Thread.message_count,
            Thread.last_date,
            Thread.space,
            Thread.private,
            Thread.subject,
            select(func.max(Delivery.id))
            .join(Message, Message.id == Delivery.message_pk)
            .where(Message.thread_id == Thread.id)
            .scalar_subquery(),
        ).where(Thread.id == thread_id)
    ).first()
    return None if row is None else tuple(row)


def store_stamp(session: Session) -> int:
    """Moves whenever anything is stored: the newest delivery (every stored copy is one)."""
    return int(session.execute(select(func.max(Delivery.id))).scalar() or 0)


def thread_detail(session: Session, viewer: Viewer, thread_id: int) -> ThreadDetail | None:
    """The thread with the messages the viewer may see; None when there are none (or no thread).

    `thread_id` must be current (see `resolve_thread_id`).
    """
    visible = visible_messages(session, viewer, thread_id)
    if not visible:
        return None
    thread = session.get_one(Thread, thread_id)
    pks = [m.id for m in visible]
    raws = dict(
        session.execute(
            select(Message.id, RawBlob.data)
            .join(RawBlob, RawBlob.sha256 == Message.raw_sha256)
            .where(Message.id.in_(pks))
        ).all()
    )
    # Every message's parent, hidden ones too: a reply to a hidden message
    # hangs under the nearest ancestor the reader may see.
    parent_of = dict(
        session.execute(
            select(Message.id, Message.parent_id).where(Message.thread_id == thread_id)
        ).all()
    )
    shown = set(pks)
    parents = {pk: _visible_ancestor(pk, parent_of, shown) for pk in pks}
    people = _people(session, pks, [m.sender_id for m in visible])
    files = _attachments(session, pks)
    conn = session.connection()
    details: dict[int, MessageDetail] = {}
    for message in visible:
        body = unpack_body_with_raw(conn, message.body, raws[message.id])
        details[message.id] = MessageDetail(
            pk=message.id,
            message_id=message.message_id,
            parent_pk=parents[message.id],
            depth=0,
            date=_aware(message.date),
            sender=people.senders.get(message.sender_id) if message.sender_id else None,
            to=tuple(people.to.get(message.id, ())),
            cc=tuple(people.cc.get(message.id, ())),
            subject=message.subject,
            new_text=body.new_text,
            quoted_text=body.quoted_text,
            signature=body.signature,
            html=body.html,
            attachments=tuple(files.get(message.id, ())),
            flags=tuple(f for f in message.flags.split(",") if f),
            tags=tuple(t for t in message.tags.split(",") if t),
        )
    ordered = _tree_order(visible, parents)
    messages = tuple(_with_depth(details[pk], depth) for pk, depth in ordered)
    seen: dict[str, PersonRef] = {}
    for m in messages:
        for ref in (m.sender, *m.to, *m.cc):
            if ref is not None and ref.address not in seen:
                seen[ref.address] = ref
    return ThreadDetail(
        id=thread.id,
        subject=thread.subject,
        space=thread.space,
        private=thread.private,
        first_date=_aware(thread.first_date),
        last_date=_aware(thread.last_date),
        messages=messages,
        participants=tuple(seen.values()),
    )


def _with_depth(detail: MessageDetail, depth: int) -> MessageDetail:
    return replace(detail, depth=depth)


def _visible_ancestor(pk: int, parent_of: dict[int, int | None], shown: set[int]) -> int | None:
    seen = {pk}
    parent = parent_of.get(pk)
    while parent is not None and parent not in shown:
        if parent in seen:  # a loop in stored parents: treat as a root
            return None
        seen.add(parent)
        parent = parent_of.get(parent)
    return parent


def _tree_order(visible: list[Message], parents: dict[int, int | None]) -> list[tuple[int, int]]:
    """(pk, depth), depth first, siblings by date; iterative (deep chains are real)."""
    # `visible` is sorted by (sort_date, id): children lists come out sorted.
    children: dict[int | None, list[int]] = defaultdict(list)
    for message in visible:
        children[parents[message.id]].append(message.id)
    order: list[tuple[int, int]] = []
    done: set[int] = set()
    roots = list(children[None]) + [m.id for m in visible]  # the rest: caught in loops
    for root in roots:
        stack = [(root, 0)]
        while stack:
            pk, depth = stack.pop()
            if pk in done:
                continue
            done.add(pk)
            order.append((pk, depth))
            stack.extend((kid, depth + 1) for kid in reversed(children.get(pk, [])))
    return order


@dataclass(slots=True)
class _People:
    senders: dict[int, PersonRef]
    to: dict[int, list[PersonRef]]
    cc: dict[int, list[PersonRef]]


def _people(session: Session, pks: list[int], sender_ids: list[int | None]) -> _People:
    ids = sorted({s for s in sender_ids if s is not None})
    senders = {
        pid: PersonRef(name or "", address)
        for pid, address, name in session.execute(
            select(Person.id, Person.address, Person.name).where(Person.id.in_(ids))
        )
    }
    to: dict[int, list[PersonRef]] = defaultdict(list)
    cc: dict[int, list[PersonRef]] = defaultdict(list)
    for pk, kind, address, name in session.execute(
        select(Recipient.message_pk, Recipient.kind, Person.address, Person.name)
        .join(Person, Person.id == Recipient.person_id)
        .where(Recipient.message_pk.in_(pks), Recipient.kind.in_(("to", "cc")))
        .order_by(Recipient.message_pk, Recipient.kind, Recipient.position)
    ):
        (to if kind == "to" else cc)[pk].append(PersonRef(name or "", address))
    return _People(senders, to, cc)


def _attachments(session: Session, pks: list[int]) -> dict[int, list[AttachmentInfo]]:
    found: dict[int, list[AttachmentInfo]] = defaultdict(list)
    for a in session.execute(
        select(Attachment)
        .where(Attachment.message_pk.in_(pks))
        .order_by(Attachment.message_pk, Attachment.position)
    ).scalars():
        found[a.message_pk].append(
            AttachmentInfo(a.position, a.filename, a.content_type, a.size, a.inline, a.content_id)
        )
    return found


def _visible_message(session: Session, viewer: Viewer, pk: int) -> Message | None:
    """The message `pk` when the viewer may see it (its thread, then itself)."""
    if not 0 < pk <= MAX_ID:
        return None
    message = session.get(Message, pk)
    if message is None:
        return None
    thread = session.get(Thread, message.thread_id)
    if thread is None:
        return None
    if not session.execute(
        select(true()).where(
            Thread.id == thread.id, visible_condition(session, viewer, [thread.id])
        )
    ).scalar():
        return None
    parties = message_parties(session, [pk]).get(pk, set())
    party = thread.id in party_thread_ids(session, viewer, [thread.id])
    if not may_see_message(
        viewer,
        parties,
        message.space,
        message.private,
        thread.space,
        thread.private,
        thread_party=party,
    ):
        return None
    return message


def locate_message(session: Session, viewer: Viewer, message_id: str) -> tuple[int, int] | None:
    """(thread id, message pk) of `message_id` (or an alias) when the viewer may see it."""
    text = message_id.strip()
    wanted = normalize_message_id(text) or text.strip("<>")
    if not wanted:
        return None
    pk = session.execute(
        select(MessageId.message_pk).where(MessageId.message_id == wanted)
    ).scalar()
    if pk is None:
        return None
    message = _visible_message(session, viewer, pk)
    return (message.thread_id, message.id) if message is not None else None


def original_bytes(session: Session, viewer: Viewer, pk: int) -> bytes | None:
    """The message exactly as first received, when the viewer may see it."""
    message = _visible_message(session, viewer, pk)
    return raw_bytes(session, message.raw_sha256) if message is not None else None


def attachment_bytes(
    session: Session, viewer: Viewer, pk: int, position: int
) -> tuple[str, str, bytes] | None:
    """(filename, content type, bytes) of an attachment, cut from the raw message."""
    if not 0 <= position <= MAX_ID:
        return None
    message = _visible_message(session, viewer, pk)
    if message is None:
        return None
    row = session.get(Attachment, (pk, position))
    if row is None:
        return None
    parts = attachment_parts(raw_bytes(session, message.raw_sha256))
    if position >= len(parts):
        return None
    return row.filename, row.content_type, attachment_data(parts[position])


def message_page_id(session: Session, viewer: Viewer, pk: int) -> int | None:
    """The thread of message `pk` when the viewer may see it (for `#m<pk>` links)."""
    message = _visible_message(session, viewer, pk)
    return message.thread_id if message is not None else None


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """A message for a feed: with its thread and the date it sorts by (never None)."""

    thread_id: int
    thread_subject: str
    sort_date: datetime
    message: MessageDetail


def newest_messages(
    session: Session,
    viewer: Viewer,
    *,
    space: str | None = None,
    thread_id: int | None = None,
    limit: int = 20,
) -> list[FeedEntry]:
    """The newest messages the viewer may see, newest first: of a space's threads or one thread.

    For the Atom feeds. Messages are read newest first in batches and kept
    when the access rule lets the viewer see them, until `limit` are found.
    """
    threads = select(Thread.id).where(visible_condition(session, viewer))
    if space is not None:
        threads = threads.where(Thread.space == space)
    if thread_id is not None:
        threads = threads.where(Thread.id == thread_id)
    shape: dict[int, tuple[str | None, bool, str]] = {}
    kept: list[tuple[int, int, datetime]] = []
    batch, offset = max(1, limit) * 2, 0
    while len(kept) < limit:
        rows = session.execute(
            select(Message.id, Message.thread_id, Message.space, Message.private, Message.sort_date)
            .where(Message.thread_id.in_(threads))
            .order_by(Message.sort_date.desc(), Message.id.desc())
            .limit(batch)
            .offset(offset)
        ).all()
        if not rows:
            break
        offset += batch
        missing = {tid for _pk, tid, *_ in rows} - set(shape)
        for tid, tspace, tprivate, subject in session.execute(
            select(Thread.id, Thread.space, Thread.private, Thread.subject).where(
                Thread.id.in_(sorted(missing))
            )
        ):
            shape[tid] = (tspace, tprivate, subject)
        parties = message_parties(session, [pk for pk, *_ in rows])
        party = party_thread_ids(session, viewer, sorted({tid for _pk, tid, *_ in rows}))
        for pk, tid, mspace, mprivate, sort_date in rows:
            tspace, tprivate, _subject = shape[tid]
            if may_see_message(
                viewer,
                parties.get(pk, set()),
                mspace,
                mprivate,
                tspace,
                tprivate,
                thread_party=tid in party,
            ):
                kept.append((pk, tid, _aware(sort_date) or datetime.min.replace(tzinfo=UTC)))
    kept = kept[:limit]
    if not kept:
        return []
    pks = [pk for pk, _t, _d in kept]
    rows_by_pk = {
        m.id: (m, raw)
        for m, raw in session.execute(
            select(Message, RawBlob.data)
            .join(RawBlob, RawBlob.sha256 == Message.raw_sha256)
            .where(Message.id.in_(pks))
        ).all()
    }
    people = _people(session, pks, [rows_by_pk[pk][0].sender_id for pk in pks])
    files = _attachments(session, pks)
    conn = session.connection()
    entries = []
    for pk, tid, sort_date in kept:
        message, raw = rows_by_pk[pk]
        body = unpack_body_with_raw(conn, message.body, raw)
        detail = MessageDetail(
            pk=pk,
            message_id=message.message_id,
            parent_pk=None,
            depth=0,
            date=_aware(message.date),
            sender=people.senders.get(message.sender_id) if message.sender_id else None,
            to=tuple(people.to.get(pk, ())),
            cc=tuple(people.cc.get(pk, ())),
            subject=message.subject,
            new_text=body.new_text,
            quoted_text=body.quoted_text,
            signature=body.signature,
            html=body.html,
            attachments=tuple(files.get(pk, ())),
            flags=tuple(f for f in message.flags.split(",") if f),
            tags=tuple(t for t in message.tags.split(",") if t),
        )
        entries.append(FeedEntry(tid, shape[tid][2], sort_date, detail))
    return entries
