"""The key that signs links and cookies, for every part of the bridge that signs."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.config import Config, read_secret
from bridge.store.db import insert_ignore
from bridge.store.tables import Secret, table

SIGNING_SECRET = "signing"
KEY_BYTES = 32


def signing_key(session: Session, config: Config, now: datetime) -> bytes:
    """`[web] secret_env` / `secret_file` when set, else the key kept in the database.

    The database key is made on first use (flushed, not committed), so every
    process sharing the database signs alike. Call it in a write transaction:
    it inserts first (a no-op once the key exists) and reads after, because
    on SQLite a transaction that read first is refused the write lock when
    another process made the key in between.
    """
    if config.web.secret_env or config.web.secret_file:
        return read_secret(config.web.secret_env, config.web.secret_file).encode("utf-8")
    statement = insert_ignore(session.get_bind().dialect.name, table(Secret))
    row = {"name": SIGNING_SECRET, "value": secrets.token_bytes(KEY_BYTES), "created_at": now}
    session.execute(statement, [row])
    return session.execute(select(Secret.value).where(Secret.name == SIGNING_SECRET)).scalar_one()
