"""The audit log: who looked at the store as someone else, or changed what others see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.store.tables import AuditEntry


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    actor: str
    action: str
    subject: str
    detail: str


def record(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    detail: str = "",
    *,
    at: datetime | None = None,
) -> None:
    """Add one entry and commit it: an audit entry is written before the answer is shown."""
    session.add(
        AuditEntry(
            at=at or datetime.now(UTC),
            actor=actor[:320],
            action=action[:64],
            subject=subject[:998],
            detail=detail,
        )
    )
    session.commit()


def entries(session: Session, *, limit: int = 100, action: str | None = None) -> list[Entry]:
    """The newest entries first."""
    query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEntry.action == action)
    return [
        Entry(
            at=row.at,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            detail=row.detail,
        )
        for row in session.execute(query).scalars()
    ]
