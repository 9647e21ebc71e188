"""IMAP checkpoints (UIDVALIDITY, last UID) and what a folder already delivered.

Sync functions taking a Session; they never commit: the IMAP worker saves a
checkpoint in the same transaction as the messages it covers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.store.tables import Delivery, ImapState, MessageId


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every message of `folder` up to `last_uid` under `uidvalidity` is stored."""

    account: str
    folder: str
    uidvalidity: int
    last_uid: int


def load_checkpoint(session: Session, account: str, folder: str) -> Checkpoint | None:
    row = session.get(ImapState, (account, folder))
    if row is None:
        return None
    return Checkpoint(account, folder, int(row.uidvalidity), int(row.last_uid))


def load_checkpoints(session: Session, account: str) -> dict[str, Checkpoint]:
    rows = session.scalars(select(ImapState).where(ImapState.account == account))
    return {
        row.folder: Checkpoint(account, row.folder, int(row.uidvalidity), int(row.last_uid))
        for row in rows
    }


def save_checkpoint(session: Session, checkpoint: Checkpoint, now: datetime) -> None:
    """Insert or move the checkpoint forward (a new UIDVALIDITY may start it again)."""
    row = session.get(ImapState, (checkpoint.account, checkpoint.folder))
    if row is None:
        row = ImapState(account=checkpoint.account, folder=checkpoint.folder)
        session.add(row)
    row.uidvalidity = checkpoint.uidvalidity
    row.last_uid = checkpoint.last_uid
    row.updated_at = now
    session.flush()


def delivered_here(
    session: Session, source: str, location: str, message_ids: Iterable[str]
) -> set[str]:
    """Which of `message_ids` a copy from this very folder (`location`) already delivered.

    After a UIDVALIDITY change every UID is new, but the messages are not:
    those found here are skipped rather than stored as a second copy.
    """
    wanted = sorted(set(message_ids))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        # Two lookups by key (message_ids' primary key, then deliveries by
        # message): one join lets SQLite walk deliveries by location instead.
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(MessageId.message_id, MessageId.message_pk).where(
                MessageId.message_id.in_(chunk)
            )
        )
        known: dict[str, int] = {mid: pk for mid, pk in rows}
        if not known:
            continue
        here = set(
            session.scalars(
                select(Delivery.message_pk)
                .where(
                    Delivery.message_pk.in_(set(known.values())),
                    Delivery.source == source,
                    Delivery.location == location,
                )
                .distinct()
            )
        )
        found.update(mid for mid, pk in known.items() if pk in here)
    return found
