"""The quarantine: messages that could not be stored, with their bytes and the reason."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge.core.message import Provenance, RawMessage
from bridge.errors import NotFoundError
from bridge.store.reading import raw_bytes
from bridge.store.tables import Quarantined


def list_held(session: Session, limit: int = 100) -> list[Quarantined]:
    return list(
        session.execute(
            select(Quarantined)
            .where(Quarantined.released_at.is_(None))
            .order_by(Quarantined.id)
            .limit(limit)
        ).scalars()
    )


def counts_by_reason(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Quarantined.reason, func.count())
        .where(Quarantined.released_at.is_(None))
        .group_by(Quarantined.reason)
        .order_by(Quarantined.reason)
    )
    return {reason: count for reason, count in rows}


def get_held(session: Session, ident: int) -> Quarantined:
    row = session.get(Quarantined, ident)
    if row is None:
        raise NotFoundError("quarantined message", str(ident))
    return row


def raw_message(session: Session, row: Quarantined) -> RawMessage:
    provenance = Provenance(
        row.source,
        row.location,
        row.mailbox,
        row.key,
        row.envelope_from,
        tuple(a for a in row.envelope_to.split("\n") if a),
    )
    return RawMessage(raw_bytes(session, row.raw_sha256), provenance)


def release(session: Session, row: Quarantined, now: datetime) -> None:
    """Mark a quarantined copy as handled, so its (source, key) can be stored."""
    session.execute(update(Quarantined).where(Quarantined.id == row.id).values(released_at=now))
