"""Exports: every stored message, or what one person may see, as JSON rows or raw bytes.

Without a reader an export is the admin's whole store. With one it applies
the access rule message by message (`store.access`): only the messages that
person may see, each as the copy they received or the shared copy
(`browse.original_bytes`), and of the deliveries only theirs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, normalize_address
from bridge.store.read.browse import original_bytes
from bridge.store.read.reading import MessageView, raw_bytes, thread_messages
from bridge.store.tables import Attachment, Delivery, Message, MessageId, Person, Recipient, Thread
from bridge.store.visibility.access import visible_message_ids, visible_thread_ids


def _thread_ids(session: Session, viewer: Viewer | None) -> list[int]:
    """Threads in order of their first message (those the reader may see, with one)."""
    ordered = list(
        session.execute(
            select(Thread.id).order_by(Thread.first_date.is_(None), Thread.first_date, Thread.id)
        ).scalars()
    )
    if viewer is None:
        return ordered
    visible = visible_thread_ids(session, viewer)
    return [tid for tid in ordered if tid in visible]


def _messages(session: Session, viewer: Viewer | None, thread_id: int) -> list[MessageView]:
    views = thread_messages(session, thread_id)
    if viewer is None:
        return views
    shown = set(visible_message_ids(session, viewer, thread_id))
    return [view for view in views if view.pk in shown]


def export_rows(session: Session, viewer: Viewer | None = None) -> Iterator[dict[str, Any]]:
    """One dict per message (per visible message with a reader), threads by first message."""
    for thread_id in _thread_ids(session, viewer):
        views = _messages(session, viewer, thread_id)
        details = _details(session, [view.pk for view in views], viewer)
        for view in views:
            yield {
                "message_id": view.message_id,
                "aliases": details["aliases"].get(view.pk, []),
                "thread_id": thread_id,
                "parent_id": view.parent_message_id,
                "date": view.date.astimezone(UTC).isoformat().replace("+00:00", "Z")
                if view.date
                else None,
                "from": {"name": view.sender_name, "address": view.sender} if view.sender else None,
                "to": details["to"].get(view.pk, []),
                "cc": details["cc"].get(view.pk, []),
                "subject": view.subject,
                "new_text": view.new_text,
                "quoted_text": view.quoted_text,
                "signature": view.signature,
                "attachments": details["attachments"].get(view.pk, []),
                "deliveries": details["deliveries"].get(view.pk, []),
                "flags": list(view.flags),
                "tags": details["tags"].get(view.pk, []),
            }


def export_raw(session: Session, viewer: Viewer | None = None) -> Iterator[bytes]:
    """The bytes of every message (each visible one, as that reader's copy), in thread order."""
    for thread_id in _thread_ids(session, viewer):
        for view in _messages(session, viewer, thread_id):
            if viewer is not None:
                data = original_bytes(session, viewer, view.pk)
                if data is not None:
                    yield data
                continue
            sha = session.execute(
                select(Message.raw_sha256).where(Message.id == view.pk)
            ).scalar_one()
            yield raw_bytes(session, sha)


def _details(
    session: Session, pks: list[int], viewer: Viewer | None
) -> dict[str, dict[int, list[Any]]]:
    out: dict[str, dict[int, list[Any]]] = {
        k: defaultdict(list) for k in ("aliases", "to", "cc", "attachments", "deliveries", "tags")
    }
    if not pks:
        return out
    canonical: dict[int, str] = {}
    for pk, message_id, tags in session.execute(
        select(Message.id, Message.message_id, Message.tags).where(Message.id.in_(pks))
    ):
        canonical[pk] = message_id
        # The rule tags of the message itself: sorted, as stored.
        out["tags"][pk] = [t for t in (tags or "").split(",") if t]
    for pk, alias in session.execute(
        select(MessageId.message_pk, MessageId.message_id)
        .where(MessageId.message_pk.in_(pks))
        .order_by(MessageId.message_id)
    ):
        if alias != canonical[pk]:
            out["aliases"][pk].append(alias)
    for pk, kind, address, name in session.execute(
        select(Recipient.message_pk, Recipient.kind, Person.address, Person.name)
        .join(Person, Person.id == Recipient.person_id)
        .where(Recipient.message_pk.in_(pks), Recipient.kind.in_(("to", "cc")))
        .order_by(Recipient.message_pk, Recipient.kind, Recipient.position)
    ):
        out[kind][pk].append({"name": name, "address": address})
    for attachment in session.execute(
        select(Attachment).where(Attachment.message_pk.in_(pks)).order_by(Attachment.position)
    ).scalars():
        out["attachments"][attachment.message_pk].append(
            {
                "filename": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
            }
        )
    reader = normalize_address(viewer.address) if viewer is not None else None
    for delivery in session.execute(
        select(Delivery).where(Delivery.message_pk.in_(pks)).order_by(Delivery.source, Delivery.key)
    ).scalars():
        # A reader's export names only the copies delivered to them, not other mailboxes.
        if reader is not None and reader not in _addresses(delivery.envelope_to):
            continue
        out["deliveries"][delivery.message_pk].append(
            {
                "source": delivery.location,
                "mailbox": delivery.mailbox,
                "kind": delivery.source,
            }
        )
    return out


def _addresses(envelope_to: str | None) -> set[str]:
    return {line.strip().lower() for line in (envelope_to or "").split("\n") if line.strip()}
