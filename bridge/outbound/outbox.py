"""The durable outbox: store functions for mail the bridge sends.

Every function takes a Session and never commits: `enqueue` joins the
transaction of whatever caused the mail, so the mail exists exactly when
its cause does. The sender (`bridge.outbound.mailer`) claims due rows with
a lease, sends them, and marks each one sent, retried or failed.

States: pending -> sent, or pending -> failed (a 5xx, or retried past
`GIVE_UP_AFTER`). A 4xx or a lost connection keeps the row pending with a
later `next_attempt_at`; the stored bytes never change, nor the Message-ID.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from bridge.core.admin_rules.loops import ORIGIN_HEADER
from bridge.store.tables import Outbox

_LINE_END = re.compile(rb"\r\n|\r|\n")
PENDING, SENT, FAILED = "pending", "sent", "failed"
# A lease outlives any one send (connect + DATA timeouts); a crashed
# sender's rows become claimable again once it runs out.
LEASE = timedelta(minutes=10)
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
# Relays keep a deferred message for days too (Postfix: 5 days); two days
# of retries at up to an hour apart is ~50 attempts.
GIVE_UP_AFTER = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One claimed message: the bytes to send and the lease that owns it."""

    id: int
    message_id: str
    recipients: tuple[str, ...]
    data: bytes
    attempts: int
    created_at: datetime
    lease_token: str


@dataclass(frozen=True, slots=True)
class FailedItem:
    """A message that will never be sent, and why (for admins)."""

    id: int
    message_id: str
    recipients: tuple[str, ...]
    attempts: int
    created_at: datetime
    reason: str


def enqueue(
    session: Session,
    message: EmailMessage | bytes,
    *,
    recipients: Sequence[str],
    now: datetime,
) -> int:
    """Store `message` to be sent to `recipients`; its id. Flushes, never commits."""
    if not recipients:
        raise ValueError("an outbox message needs at least one recipient")
    if isinstance(message, EmailMessage):
        # CRLF line ends, as they go on the wire: the bytes are final here.
        data = message.as_bytes(policy=SMTP)
        message_id = str(message.get("Message-ID", "")).strip()
    else:
        # What the relay gets: aiosmtplib would make every line end CRLF anyway,
        # so do it once here and the stored bytes are exactly the sent bytes.
        data = _LINE_END.sub(b"\r\n", message)
        data = data if data.endswith(b"\r\n") else data + b"\r\n"
        message_id = _header(data, b"message-id")
    if not _header(data, ORIGIN_HEADER.lower().encode()):
        # Without it a copy that comes back (a list, a forward) would be bridged again.
        raise ValueError(f"outgoing mail must carry the {ORIGIN_HEADER} header")
    row = Outbox(
        message_id=message_id,
        recipients="\n".join(r.strip() for r in recipients),
        data=data,
        status=PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=now,
        last_error="",
    )
    session.add(row)
    session.flush()
    return row.id


def claim(session: Session, now: datetime, limit: int = 50) -> list[OutboxItem]:
    """Lease up to `limit` due messages to this caller; commit before sending.

    One UPDATE takes them: its WHERE is checked again on every row it
    locks (PostgreSQL re-reads a row another sender just leased; SQLite
    has one writer at a time, and a write statement first takes the
    lock), so two senders never both win a row. A loser just gets fewer.
    """
    free = or_(Outbox.lease_until.is_(None), Outbox.lease_until <= now)
    due = and_(Outbox.status == PENDING, Outbox.next_attempt_at <= now, free)
    candidates = (
        select(Outbox.id).where(due).order_by(Outbox.next_attempt_at, Outbox.id).limit(limit)
    )
    token = secrets.token_hex(16)
    taken = session.execute(
        update(Outbox)
        .where(Outbox.id.in_(candidates.scalar_subquery()), due)
        .values(lease_until=now + LEASE, lease_token=token)
        .returning(
            Outbox.id,
            Outbox.message_id,
            Outbox.recipients,
            Outbox.data,
            Outbox.attempts,
            Outbox.created_at,
        )
        .execution_options(synchronize_session=False)
    ).all()
    items = [
        OutboxItem(
            r.id, r.message_id, _split(r.recipients), r.data, r.attempts, r.created_at, token
        )
        for r in taken
    ]
    return sorted(items, key=lambda item: item.id)


def _owned(item: OutboxItem) -> object:
    return and_(Outbox.id == item.id, Outbox.lease_token == item.lease_token)


def _finish(session: Session, item: OutboxItem, **values: object) -> bool:
    result = session.execute(
        update(Outbox)
        .where(_owned(item))  # type: ignore[arg-type]
        .values(lease_until=None, lease_token=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_sent(session: Session, item: OutboxItem, now: datetime) -> bool:
    """The relay took it. False when the lease was lost (it may be sent twice)."""
    return _finish(
        session, item, status=SENT, sent_at=now, attempts=item.attempts + 1, last_error=""
    )


def release(session: Session, item: OutboxItem) -> bool:
    """Give a claimed message back untried: claimable again at once, no attempt counted."""
    return _finish(session, item)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed try: 1 min, doubling, at most an hour."""
    return min(FIRST_RETRY * (2 ** min(max(attempts - 1, 0), 16)), MAX_RETRY)


def mark_retry(session: Session, item: OutboxItem, reason: str, now: datetime) -> str:
    """A temporary failure: try again later, or fail when it has been too long. The new status."""
    attempts = item.attempts + 1
    if now - item.created_at >= GIVE_UP_AFTER:
        _finish(session, item, status=FAILED, attempts=attempts, last_error=f"gave up: {reason}")
        return FAILED
    _finish(
        session,
        item,
        attempts=attempts,
        next_attempt_at=now + retry_delay(attempts),
        last_error=reason,
    )
    return PENDING


def mark_failed(session: Session, item: OutboxItem, reason: str) -> bool:
    """A permanent failure (a 5xx): never tried again; `reason` is shown to admins."""
    return _finish(session, item, status=FAILED, attempts=item.attempts + 1, last_error=reason)


def failed(session: Session, limit: int = 200) -> list[FailedItem]:
    """Messages that will not be sent, newest first, with the reason."""
    rows = session.execute(
        select(
            Outbox.id,
            Outbox.message_id,
            Outbox.recipients,
            Outbox.attempts,
            Outbox.created_at,
            Outbox.last_error,
        )
        .where(Outbox.status == FAILED)
        .order_by(Outbox.id.desc())
        .limit(limit)
    ).all()
    return [
        FailedItem(
            r.id,
            r.message_id,
            tuple(r.recipients.split("\n")),
            r.attempts,
            r.created_at,
            r.last_error,
        )
        for r in rows
    ]


def counts(session: Session) -> dict[str, int]:
    """Messages by status, for /healthz and the admin page."""
    rows = session.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all()
    return {status: n for status, n in rows}


def _split(recipients: str) -> tuple[str, ...]:
    return tuple(r for r in recipients.split("\n") if r)


def _header(data: bytes, name: bytes) -> str:
    """One header's raw value from the head of `data` (unfolded), or ""."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    value: list[bytes] = []
    for line in head.splitlines():
        if value and line[:1] in (b" ", b"\t"):
            value.append(line.strip())
        elif value:
            break
        elif line.lower().startswith(name + b":"):
            value.append(line[len(name) + 1 :].strip())
    return b" ".join(value).decode("ascii", "replace")
