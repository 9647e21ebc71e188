"""Keys the bridge makes for itself, kept in the database (see `tables.Secret`)."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.store.db import insert_ignore
from bridge.store.tables import Secret, table


def get_or_create(session: Session, name: str, now: datetime, size: int = 32) -> bytes:
    """The secret called `name`, made now if there is none yet. Flushes, never commits.

    Two processes starting together both try to insert; the second insert is
    ignored and both read back the one that won.
    """
    value = session.execute(select(Secret.value).where(Secret.name == name)).scalar()
    if value is not None:
        return value
    statement = insert_ignore(session.get_bind().dialect.name, table(Secret))
    session.execute(
        statement, [{"name": name, "value": secrets.token_bytes(size), "created_at": now}]
    )
    return session.execute(select(Secret.value).where(Secret.name == name)).scalar_one()
