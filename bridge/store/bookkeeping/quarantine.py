"""The quarantine: messages that could not be stored, with their bytes and the reason."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge.core.message import Provenance, RawMessage
from bridge.errors import NotFoundError
from bridge.store.read.reading import raw_bytes
from bridge.store.tables import Quarantined

STORE_FAILED = "store-failed"  # the store refused the copy: retried on a backoff
RETRY_FIRST = timedelta(minutes=5)
RETRY_LONGEST = timedelta(hours=6)


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next automatic retry, after `attempts` failed ones: 5 min doubling to 6 h."""
    return min(RETRY_FIRST * 2 ** min(attempts, 16), RETRY_LONGEST)


def due_for_retry(session: Session, now: datetime, limit: int = 50) -> list[int]:
    """Held `store-failed` copies whose next retry time has come, oldest first."""
    return list(
        session.execute(
            select(Quarantined.id)
            .where(
                Quarantined.released_at.is_(None),
                Quarantined.reason == STORE_FAILED,
                Quarantined.retry_at <= now,
            )
            .order_by(Quarantined.retry_at, Quarantined.id)
            .limit(limit)
        ).scalars()
    )


def postpone(session: Session, ident: int, now: datetime) -> None:
    """A retry failed: count it and set the next one further off."""
    row = get_held(session, ident)
    row.attempts += 1
    row.retry_at = now + retry_delay(row.attempts)


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
