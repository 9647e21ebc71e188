"""What the viewer, its API and its feeds read: threads and messages a reader may see.

Plain sync functions taking a Session and a `Viewer`; they return frozen
values, never ORM objects, and never commit. Every one of them applies the
access rule (`bridge.store.visibility.access`): something the reader may not see is
answered exactly like something missing (None, or absent from a list).

The rule is per message: a listing groups the messages the reader may see
(`store.access.visible_arms`) by thread, so its order, counts, dates, titles
and participants come from those messages alone, never from the thread row
(which describes every message, hidden ones included).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, normalize_address
from bridge.core.mail.copies import shared_copy
from bridge.core.mail.parse import attachment_data, attachment_parts
from bridge.core.normalize import normalize_message_id
from bridge.store.blobs import unpack_body_with_raw
from bridge.store.read import marks
from bridge.store.read.reading import raw_bytes
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
from bridge.store.visibility.access import (
    NAMING_KINDS,
    ThreadView,
    may_see_message,
    reader_copy,
    thread_views,
    visible_arms,
    visible_messages,
)
from bridge.store.write.threading_store import resolve_thread_id as _resolve

SHOWN_PARTICIPANTS = 6  # names shown in a listing row; the rest are counted
MAX_ID = 2**31 - 1  # ids are 32-bit on PostgreSQL: larger ones name nothing


def in_range(ident: int) -> int:
    """`ident` if a stored row could have it, else 0 (which none has): safe in any query."""
    return ident if 0 < ident <= MAX_ID else 0


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
    # The reader's own marks (bridge.store.read.marks), over messages they may see.
    unread: int = 0
    tags: tuple[str, ...] = ()
    watch: str = ""


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
    html: str | None  # sanitised at import (bridge.core.body.html); remote images not loaded
    attachments: tuple[AttachmentInfo, ...]
    flags: tuple[str, ...]
    tags: tuple[str, ...]
    # Bcc as this reader may know it: all of it for the sender, themselves for a Bcc recipient.
    bcc: tuple[PersonRef, ...] = ()


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


def _listing_having(
    session: Session,
    v: Any,
    *,
    space: str | None,
    person: str | None,
    participant: str | None,
    has_attachment: bool | None,
    after: datetime | None,
    before: datetime | None,
    tag: str | None = None,
) -> list[ColumnElement[bool]] | None:
    """HAVING clauses over a thread's visible messages `v`; None when a filter matches nothing.

    Every filter reads only visible messages: filtering by person must not
    reveal that someone took part through a message hidden from the reader.
    """
    having: list[ColumnElement[bool]] = []

    def some(condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return func.max(case((condition, 1), else_=0)) == 1

    if space is not None:
        having.append(some(v.c.space == space))
    if person is not None:
        # An unknown address is asked like a known one (no row has id 0), so a
        # person the reader shares nothing with and a stranger cost the same.
        pid = _person_id(session, person) or 0
        named = select(Recipient.message_pk).where(
            Recipient.person_id == pid, Recipient.kind.in_(NAMING_KINDS)
        )
        having.append(some(or_(v.c.sender_id == pid, v.c.id.in_(named))))
    if participant is not None:
        pid = _person_id(session, participant) or 0
        having.append(some(v.c.sender_id == pid))
    if has_attachment is not None:
        attached = some(v.c.has_attachment.is_(True))
        having.append(attached if has_attachment else ~attached)
    if tag is not None:
        # Tags are stored sorted and comma-separated: `,tag,` inside `,tags,`, any case.
        literal = tag.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        tagged = func.lower("," + v.c.tags + ",").like(f"%,{literal},%", escape="\\")
        having.append(some(tagged))
    if after is not None:
        having.append(func.max(v.c.sort_date) >= after)
    if before is not None:
        having.append(func.max(v.c.sort_date) < before)
    return having


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
    tag: str | None = None,
    muted: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ThreadSummary], int]:
    """Threads the viewer may see, their latest visible message first, and how many in all.

    `space`: threads with a visible message in that space. `person`: threads
    the address wrote in or was sent (To/Cc). `participant`: threads the
    address wrote in. `after` / `before`: the newest visible message at or
    after / before these instants. `tag`: threads with a visible message the
    rules tagged so. `muted`: False leaves out the threads the viewer muted,
    True keeps only those (None: both).
    """
    arms = visible_arms(
        session,
        viewer,
        Message.id,
        Message.thread_id,
        Message.sort_date,
        Message.space,
        Message.has_attachment,
        Message.sender_id,
        Message.tags,
    )
    if arms is None:
        return [], 0
    v = arms.subquery("v")
    having = _listing_having(
        session,
        v,
        space=space,
        person=person,
        participant=participant,
        has_attachment=has_attachment,
        after=after,
        before=before,
        tag=tag,
    )
    if having is None:
        return [], 0
    last = func.max(v.c.sort_date).label("last")
    grouped = select(v.c.thread_id, last).group_by(v.c.thread_id)
    if muted is not None:
        muting = v.c.thread_id.in_(marks.muted_threads(viewer.address))
        grouped = grouped.where(muting if muted else ~muting)
    if having:
        grouped = grouped.having(and_(*having))
    total = session.execute(select(func.count()).select_from(grouped.subquery())).scalar()
    page = session.execute(
        grouped.order_by(last.desc(), v.c.thread_id.desc())
        .limit(max(0, limit))
        .offset(max(0, offset))
    ).all()
    return summaries_for(session, viewer, [tid for tid, _last in page]), int(total or 0)


def summaries_for(session: Session, viewer: Viewer, thread_ids: list[int]) -> list[ThreadSummary]:
    """Summaries of the given threads (in that order) the viewer may see; others are left out."""
    if not thread_ids:
        return []
    views = thread_views(session, viewer, thread_ids)
    wanted = {s for view in views.values() for s in view.sender_ids[:SHOWN_PARTICIPANTS]}
    people = {
        pid: PersonRef(name or "", address)
        for pid, address, name in session.execute(
            select(Person.id, Person.address, Person.name).where(Person.id.in_(sorted(wanted)))
        )
    }
    states = marks.thread_states(session, viewer, list(views))
    return [
        _with_state(_summary(views[tid], people), states.get(tid))
        for tid in thread_ids
        if tid in views
    ]


def _with_state(summary: ThreadSummary, state: marks.ThreadState | None) -> ThreadSummary:
    if state is None:
        return summary
    return replace(summary, unread=state.unread, tags=state.tags, watch=state.watch)


def _summary(view: ThreadView, people: dict[int, PersonRef]) -> ThreadSummary:
    return ThreadSummary(
        id=view.id,
        subject=view.subject,
        space=view.space,
        private=view.private,
        first_date=_aware(view.first_date),
        last_date=_aware(view.last_date),
        message_count=view.message_count,
        participants=tuple(people[s] for s in view.sender_ids[:SHOWN_PARTICIPANTS]),
        more_participants=max(0, len(view.sender_ids) - SHOWN_PARTICIPANTS),
        has_attachment=view.has_attachment,
    )


def find_person(session: Session, address: str) -> PersonRef | None:
    """A person known to the store, by address (no access check: callers check threads)."""
    row = session.execute(
        select(Person.name, Person.address).where(Person.address == normalize_address(address))
    ).first()
    return PersonRef(row[0] or "", row[1]) if row is not None else None


def display_names(session: Session, addresses: list[str]) -> dict[str, str]:
    """The display name mail gave each of these addresses, in one query (none: left out).

    For lists that know a sender only by address (search hits): a person
    whose message carried no name shows the name their other mail gave.
    """
    wanted = sorted({normalize_address(a) for a in addresses if a})
    if not wanted:
        return {}
    rows = session.execute(
        select(Person.address, Person.name).where(Person.address.in_(wanted), Person.name != "")
    )
    return {address: name for address, name in rows}


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

    `thread_id` must be current (see `resolve_thread_id`). Title, dates,
    space and participants come from the visible messages only.
    """
    visible = visible_messages(session, viewer, thread_id)
    if not visible:
        return None
    view = thread_views(session, viewer, [thread_id])[thread_id]
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
    people = _people(session, pks, [m.sender_id for m in visible], viewer)
    files = _attachments(session, pks)
    conn = session.connection()
    details: dict[int, MessageDetail] = {}
    for message in visible:
        body = unpack_body_with_raw(conn, message.body, raws[message.id])
        details[message.id] = _detail(message, body, people, files, parents[message.id])
    ordered = _tree_order(visible, parents)
    messages = tuple(_with_depth(details[pk], depth) for pk, depth in ordered)
    seen: dict[str, PersonRef] = {}
    for m in messages:
        for ref in (m.sender, *m.to, *m.cc):
            if ref is not None and ref.address not in seen:
                seen[ref.address] = ref
    return ThreadDetail(
        id=thread_id,
        subject=view.subject,
        space=view.space,
        private=view.private,
        first_date=_aware(view.first_date),
        last_date=_aware(view.last_date),
        messages=messages,
        participants=tuple(seen.values()),
    )


def _detail(
    message: Message,
    body: Any,
    people: _People,
    files: dict[int, list[AttachmentInfo]],
    parent: int | None,
) -> MessageDetail:
    return MessageDetail(
        pk=message.id,
        message_id=message.message_id,
        parent_pk=parent,
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
        bcc=tuple(people.bcc.get(message.id, ())),
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
    bcc: dict[int, list[PersonRef]]  # as the reader may know it


def _people(
    session: Session, pks: list[int], sender_ids: list[int | None], viewer: Viewer
) -> _People:
    """Senders, To and Cc of the messages, and the Bcc each reader may know of.

    The sender sees their whole Bcc list; a Bcc recipient sees themselves
    in it; nobody else learns that a Bcc existed.
    """
    ids = sorted({s for s in sender_ids if s is not None})
    senders = {
        pid: PersonRef(name or "", address)
        for pid, address, name in session.execute(
            select(Person.id, Person.address, Person.name).where(Person.id.in_(ids))
        )
    }
    sent_by: dict[int, int | None] = {
        pk: sender
        for pk, sender in session.execute(
            select(Message.id, Message.sender_id).where(Message.id.in_(pks))
        )
    }
    reader = normalize_address(viewer.address)
    to: dict[int, list[PersonRef]] = defaultdict(list)
    cc: dict[int, list[PersonRef]] = defaultdict(list)
    bcc: dict[int, list[PersonRef]] = defaultdict(list)
    for pk, kind, address, name in session.execute(
        select(Recipient.message_pk, Recipient.kind, Person.address, Person.name)
        .join(Person, Person.id == Recipient.person_id)
        .where(Recipient.message_pk.in_(pks))
        .order_by(Recipient.message_pk, Recipient.kind, Recipient.position)
    ):
        ref = PersonRef(name or "", address)
        if kind == "to":
            to[pk].append(ref)
        elif kind == "cc":
            cc[pk].append(ref)
        elif kind == "bcc" and reader:
            sender = senders.get(sent_by.get(pk) or -1)
            if (sender is not None and sender.address == reader) or address == reader:
                bcc[pk].append(ref)
    return _People(senders, to, cc, bcc)


def knows_bcc(session: Session, viewer: Viewer, pks: list[int]) -> bool:
    """Whether any of these messages shows the viewer a Bcc (they sent it, or were Bcc'd)."""
    pid = _person_id(session, viewer.address) if viewer.address else None
    if pid is None or not pks:
        return False
    # Led by the messages asked (the recipients key starts with message_pk): a
    # lookup per message, never a scan of every Bcc row in the store.
    query = (
        select(Recipient.person_id, Message.sender_id)
        .join(Message, Message.id == Recipient.message_pk)
        .where(Recipient.message_pk.in_(pks), Recipient.kind == "bcc")
    )
    return any(pid in (person, sender) for person, sender in session.execute(query))


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
    """The message `pk` when the viewer may see it."""
    if not 0 < pk <= MAX_ID or not may_see_message(session, viewer, pk):
        return None
    return session.get(Message, pk)


def locate_message(session: Session, viewer: Viewer, message_id: str) -> tuple[int, int] | None:
    """(thread id, message pk) of `message_id` (or an alias) when the viewer may see it."""
    text = message_id.strip()
    wanted = normalize_message_id(text) or text.strip("<>")
    if not wanted:
        return None
    pk = session.execute(
        select(MessageId.message_pk).where(MessageId.message_id == wanted)
    ).scalar()
    # An unknown id is checked like a hidden one, so both 404s take the same time.
    message = _visible_message(session, viewer, pk if pk is not None else MAX_ID)
    return (message.thread_id, message.id) if pk is not None and message is not None else None


def original_bytes(session: Session, viewer: Viewer, pk: int) -> bytes | None:
    """The message as it reached the viewer, when they may see it.

    A reader who holds a copy gets that copy exactly as received (the
    sender's own copy, with its Bcc, goes only to a sender who holds it).
    Others (named in a header, or reading the space) get the first copy
    stored without the headers that name who one copy was delivered to
    (`core.copies.shared_copy`): no reader learns of a Bcc or another
    person's delivery through it.
    """
    message = _visible_message(session, viewer, pk)
    if message is None:
        return None
    own = reader_copy(session, viewer, pk)
    if own is not None:
        return raw_bytes(session, own)
    return shared_copy(raw_bytes(session, message.raw_sha256))


def attachment_bytes(
    session: Session, viewer: Viewer, pk: int, position: int
) -> tuple[str, str, bytes] | None:
    """(filename, content type, bytes) of an attachment, cut from the reader's copy."""
    if not 0 <= position <= MAX_ID:
        return None
    message = _visible_message(session, viewer, pk)
    if message is None:
        return None
    row = session.get(Attachment, (pk, position))
    if row is None:
        return None
    sha256 = reader_copy(session, viewer, pk) or message.raw_sha256
    parts = attachment_parts(raw_bytes(session, sha256))
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

    For the Atom feeds. A space's feed holds the threads with a visible
    message in that space; each entry's thread title is the reader's.
    """
    arms = visible_arms(
        session,
        viewer,
        Message.id,
        Message.thread_id,
        Message.sort_date,
        thread_ids=[thread_id] if thread_id is not None else None,
    )
    if arms is None:
        return []
    v = arms.subquery("v")
    query = select(v.c.id, v.c.thread_id, v.c.sort_date)
    if space is not None:
        in_space = select(Message.thread_id).where(
            Message.space == space, Message.id.in_(select(v.c.id))
        )
        query = query.where(v.c.thread_id.in_(in_space))
    kept = session.execute(
        query.order_by(v.c.sort_date.desc(), v.c.id.desc()).limit(max(0, limit))
    ).all()
    if not kept:
        return []
    pks = [pk for pk, _t, _d in kept]
    titles = {
        tid: view.subject
        for tid, view in thread_views(
            session, viewer, sorted({tid for _pk, tid, _d in kept})
        ).items()
    }
    rows_by_pk = {
        m.id: (m, raw)
        for m, raw in session.execute(
            select(Message, RawBlob.data)
            .join(RawBlob, RawBlob.sha256 == Message.raw_sha256)
            .where(Message.id.in_(pks))
        ).all()
    }
    people = _people(session, pks, [rows_by_pk[pk][0].sender_id for pk in pks], viewer)
    files = _attachments(session, pks)
    conn = session.connection()
    entries = []
    for pk, tid, sort_date in kept:
        message, raw = rows_by_pk[pk]
        body = unpack_body_with_raw(conn, message.body, raw)
        detail = _detail(message, body, people, files, None)
        date = _aware(sort_date) or datetime.min.replace(tzinfo=UTC)
        entries.append(FeedEntry(tid, titles.get(tid, ""), date, detail))
    return entries
