"""Messages that share a Message-ID with other content (id collisions).

The batch writer (`store/write/messages.py`) stores a copy whose Message-ID is held
by a message with other content as a message of its own: flagged
`id-collision`, known by its collision id (`core/linking/dedupe.collision_id`),
while the message stored first keeps the real id. Here: listing them for
admins (`bridge collisions`, the admin page), and the store task that splits
copies that older versions merged on their Message-ID alone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, delete, func, select, update
from sqlalchemy.orm import Session

from bridge.core.linking import dedupe
from bridge.core.message import Flag, Provenance, RawMessage
from bridge.errors import NotFoundError
from bridge.pipeline import Prepared, prepare, store_batch
from bridge.store.migrate import save_position
from bridge.store.read.reading import raw_bytes
from bridge.store.tables import (
    ContentHash,
    Delivery,
    EnvelopeRecipient,
    Message,
    MessageId,
    Person,
    table,
)
from bridge.store.write.message_rows import envelope_addresses

log = logging.getLogger(__name__)

TASK = "split-id-merged-copies"
BATCH = 200  # messages with other copies per committed transaction


# --- what admins see ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopySource:
    """Where one copy of a collision message was delivered."""

    source: str
    location: str
    mailbox: str
    key: str


@dataclass(frozen=True, slots=True)
class Collision:
    """A message stored apart because its Message-ID is held by other content.

    `real_ids` are the Message-IDs it carried; `holders` the pks of the
    messages holding them now (those stored first).
    """

    pk: int
    stored_id: str
    real_ids: tuple[str, ...]
    holders: tuple[int, ...]
    date: datetime | None
    sender: str
    subject: str
    copies: tuple[CopySource, ...]


def _is_collision() -> ColumnElement[bool]:
    return Message.flags.contains(Flag.ID_COLLISION)


def count_collisions(session: Session) -> int:
    query = select(func.count()).select_from(Message).where(_is_collision())
    return int(session.execute(query).scalar_one())


def list_collisions(session: Session, limit: int = 500) -> list[Collision]:
    """Collision messages, oldest stored first (the flag is read from every message row)."""
    pks = session.execute(
        select(Message.id).where(_is_collision()).order_by(Message.id).limit(limit)
    ).scalars()
    return _collisions(session, list(pks))


def get_collision(session: Session, pk: int) -> Collision:
    found = _collisions(session, [pk])
    if not found:
        raise NotFoundError("id collision", str(pk))
    return found[0]


def _collisions(session: Session, pks: list[int]) -> list[Collision]:
    if not pks:
        return []
    rows = session.execute(
        select(Message.id, Message.message_id, Message.date, Message.subject, Person.address)
        .outerjoin(Person, Person.id == Message.sender_id)
        .where(Message.id.in_(pks), _is_collision())
        .order_by(Message.id)
    ).all()
    real: dict[int, set[str]] = defaultdict(set)
    for pk, message_id in session.execute(
        select(MessageId.message_pk, MessageId.message_id).where(MessageId.message_pk.in_(pks))
    ):
        if dedupe.is_collision_id(message_id):
            real[pk].add(dedupe.real_id(message_id))
    wanted = sorted({mid for ids in real.values() for mid in ids})
    holder_of = {
        message_id: pk
        for message_id, pk in session.execute(
            select(MessageId.message_id, MessageId.message_pk).where(
                MessageId.message_id.in_(wanted)
            )
        )
    }
    copies: dict[int, list[CopySource]] = defaultdict(list)
    for pk, *where in session.execute(
        select(
            Delivery.message_pk, Delivery.source, Delivery.location, Delivery.mailbox, Delivery.key
        )
        .where(Delivery.message_pk.in_(pks))
        .order_by(Delivery.id)
    ):
        copies[pk].append(CopySource(*where))
    return [
        Collision(
            pk=row.id,
            stored_id=row.message_id,
            real_ids=tuple(sorted(real[row.id])),
            holders=tuple(sorted({holder_of[m] for m in real[row.id] if m in holder_of})),
            date=row.date,
            sender=row.address or "",
            subject=row.subject,
            copies=tuple(copies[row.id]),
        )
        for row in rows
    ]


# --- the store task ------------------------------------------------------------------


def split_id_merged_copies(engine: Engine, position: int) -> int | None:
    """Store task: copies once merged on their Message-ID alone become their own messages.

    Each call takes the next BATCH messages (by pk, from `position`) that
    have a copy whose raw bytes differ from their own, parses those copies
    with the pipeline's `prepare`, and stores each whose content hash
    differs again through `store_batch`, after taking it (and the envelope
    recipients, content hash and id only it brought) off the message: it
    becomes an id collision, and the message keeps its id. One committed
    transaction per call, the new position saved in it; None when nothing is
    left. A rerun finds nothing more to split.
    """
    with Session(engine) as session, session.begin():
        pks = list(
            session.execute(
                select(Delivery.message_pk)
                .join(Message, Message.id == Delivery.message_pk)
                .where(Delivery.message_pk >= position, Delivery.raw_sha256 != Message.raw_sha256)
                .group_by(Delivery.message_pk)
                .order_by(Delivery.message_pk)
                .limit(BATCH)
            ).scalars()
        )
        if not pks:
            return None
        for pk in pks:
            _split(session, pk)
        reached = pks[-1] + 1
        save_position(session, TASK, reached)
    return reached


def _split(session: Session, pk: int) -> None:
    """Store again, apart, the copies of message `pk` whose content differs from its own."""
    message_id, own_sha = session.execute(
        select(Message.message_id, Message.raw_sha256).where(Message.id == pk)
    ).one()
    own = prepare(RawMessage(raw_bytes(session, own_sha), Provenance("store", "")))
    if own.content_hash is None:
        return  # its own bytes no longer parse: nothing to compare with
    kept: list[tuple[Row[Any], Prepared]] = []
    apart: list[tuple[Row[Any], Prepared]] = []
    deliveries = table(Delivery)
    for copy in session.execute(
        select(deliveries).where(deliveries.c.message_pk == pk).order_by(deliveries.c.id)
    ):
        if copy.raw_sha256 == own_sha:
            kept.append((copy, own))
            continue
        item = prepare(_raw_message(session, copy))
        same = item.content_hash is None or item.content_hash == own.content_hash
        (kept if same else apart).append((copy, item))
    if not apart:
        return
    try:
        with session.begin_nested():
            _take_off(session, pk, message_id, kept, apart)
            for copy, item in apart:
                store_batch(session, [item], copy.received_at)
    except Exception:
        log.exception("<%s> copies with other content could not be split off", message_id)
        return
    log.info("<%s> %d copies with other content stored apart", message_id, len(apart))


def _raw_message(session: Session, copy: Row[Any]) -> RawMessage:
    provenance = Provenance(
        copy.source,
        copy.location,
        copy.mailbox,
        copy.key,
        copy.envelope_from,
        tuple(a for a in copy.envelope_to.split("\n") if a),
    )
    return RawMessage(raw_bytes(session, copy.raw_sha256), provenance)


def _take_off(
    session: Session,
    pk: int,
    message_id: str,
    kept: list[tuple[Row[Any], Prepared]],
    apart: list[tuple[Row[Any], Prepared]],
) -> None:
    """Delete the `apart` deliveries of message `pk` and what only they justified."""
    session.execute(delete(Delivery).where(Delivery.id.in_([copy.id for copy, _ in apart])))

    def union(copies: list[tuple[Row[Any], Prepared]], field: str) -> set[str]:
        return {v for _, item in copies if (v := getattr(item, field)) is not None}

    addresses = {a for copy, _ in apart for a in envelope_addresses(copy.envelope_to.split("\n"))}
    addresses -= {a for copy, _ in kept for a in envelope_addresses(copy.envelope_to.split("\n"))}
    if addresses:
        people = select(Person.id).where(Person.address.in_(sorted(addresses)))
        session.execute(
            delete(EnvelopeRecipient).where(
                EnvelopeRecipient.message_pk == pk, EnvelopeRecipient.person_id.in_(people)
            )
        )
    hashes = union(apart, "content_hash") - union(kept, "content_hash")
    session.execute(
        delete(ContentHash).where(ContentHash.message_pk == pk, ContentHash.hash.in_(hashes))
    )
    ids = union(apart, "message_id") - union(kept, "message_id")
    session.execute(
        delete(MessageId).where(MessageId.message_pk == pk, MessageId.message_id.in_(ids))
    )
    remaining = set(
        session.execute(select(MessageId.message_id).where(MessageId.message_pk == pk)).scalars()
    )
    if remaining and dedupe.canonical_id(remaining) != message_id:
        session.execute(
            update(Message)
            .where(Message.id == pk)
            .values(message_id=dedupe.canonical_id(remaining))
        )
