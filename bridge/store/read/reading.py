"""Reading the store: messages by id, raw bytes, threads as trees.

Sync functions taking a Session, shared by the CLI, the web viewer and exports.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.core.normalize import normalize_message_id
from bridge.errors import NotFoundError
from bridge.store.blobs import decompress, unpack_body_with_raw
from bridge.store.tables import (
    Message,
    MessageId,
    Person,
    RawBlob,
    Thread,
)
from bridge.store.write.threading_store import resolve_thread_id


def find_message(session: Session, message_id: str) -> Message:
    """The message stored under `message_id` or any of its aliases."""
    wanted = normalize_message_id(message_id) or message_id.strip().strip("<>")
    pk = session.execute(
        select(MessageId.message_pk).where(MessageId.message_id == wanted)
    ).scalar()
    if pk is None:
        raise NotFoundError("message", message_id)
    return session.get_one(Message, pk)


def raw_bytes(session: Session, sha256: str) -> bytes:
    data = session.execute(select(RawBlob.data).where(RawBlob.sha256 == sha256)).scalar()
    if data is None:
        raise NotFoundError("raw message", sha256)
    return decompress(session.connection(), data)


def find_thread_id(session: Session, ident: str) -> int:
    """A thread id from a thread number or any Message-ID in the thread."""
    text = ident.strip()
    if text.isdigit():
        resolved = resolve_thread_id(session, int(text))
        if resolved is not None:
            return resolved
    try:
        return find_message(session, text).thread_id
    except NotFoundError:
        raise NotFoundError("thread or message", ident) from None


@dataclass(frozen=True, slots=True)
class MessageView:
    pk: int
    message_id: str
    parent_message_id: str | None
    depth: int
    date: datetime | None
    sender: str
    sender_name: str
    subject: str
    new_text: str
    quoted_text: str
    signature: str
    html: str | None
    flags: tuple[str, ...]


def thread_messages(session: Session, thread_id: int) -> list[MessageView]:
    """The thread's messages in tree order (depth-first, siblings by date)."""
    rows = list(
        session.execute(
            select(Message, Person.address, Person.name, RawBlob.data)
            .outerjoin(Person, Person.id == Message.sender_id)
            .join(RawBlob, RawBlob.sha256 == Message.raw_sha256)
            .where(Message.thread_id == thread_id)
        )
    )
    if not rows:
        raise NotFoundError("thread", str(thread_id))
    by_pk = {message.id: (message, address or "", name or "") for message, address, name, _ in rows}
    raws = {message.id: raw for message, _a, _n, raw in rows}
    children: dict[int | None, list[int]] = defaultdict(list)
    for pk, (message, _a, _n) in by_pk.items():
        parent = message.parent_id if message.parent_id in by_pk else None
        children[parent].append(pk)
    for kids in children.values():
        kids.sort(key=lambda pk: (_sort_key(by_pk[pk][0]), by_pk[pk][0].message_id))
    views: list[MessageView] = []
    stack = [(pk, 0) for pk in reversed(children[None])]
    seen: set[int] = set()
    while stack:
        pk, depth = stack.pop()
        if pk in seen:
            continue
        seen.add(pk)
        message, address, name = by_pk[pk]
        parent_row = by_pk.get(message.parent_id) if message.parent_id else None
        body = unpack_body_with_raw(session.connection(), message.body, raws[pk])
        views.append(
            MessageView(
                pk=pk,
                message_id=message.message_id,
                parent_message_id=parent_row[0].message_id if parent_row else None,
                depth=depth,
                date=_aware(message.date),
                sender=address,
                sender_name=name,
                subject=message.subject,
                new_text=body.new_text,
                quoted_text=body.quoted_text,
                signature=body.signature,
                html=body.html,
                flags=tuple(f for f in message.flags.split(",") if f),
            )
        )
        stack.extend((kid, depth + 1) for kid in reversed(children.get(pk, [])))
    return views


def _sort_key(message: Message) -> datetime:
    return _aware(message.sort_date) or datetime.min.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def thread_row(session: Session, thread_id: int) -> Thread:
    thread = session.get(Thread, thread_id)
    if thread is None:
        raise NotFoundError("thread", str(thread_id))
    return thread
