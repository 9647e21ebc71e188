"""Schema upgrades with Alembic, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.errors import SchemaTooNew
from bridge.store.db import insert_ignore
from bridge.store.tables import StoreTask, table

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema of `engine`'s database up to `revision`, then its data (store tasks).

    A database written by a newer Bridge (a revision this one does not know)
    is refused: running old code on it could lose what the new schema keeps.
    """
    refuse_newer_schema(engine)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    if revision == "head":
        run_store_tasks(engine)


# A store task covers the store in batches: given the engine and the position
# reached so far, it does one batch in its own committed transaction (saving
# the new position with `save_position` in that same transaction) and returns
# the new position, or None once nothing is left.
StoreTaskStep = Callable[[Engine, int], "int | None"]


def _store_tasks() -> list[tuple[str, StoreTaskStep]]:
    from bridge.store.bookkeeping.collisions import split_id_merged_copies

    return [("split-id-merged-copies", split_id_merged_copies)]


def save_position(session: Session, name: str, position: int, *, done: bool = False) -> None:
    """Record a task's progress in the caller's transaction (with the batch it covers)."""
    now = datetime.now(UTC)
    dialect = session.get_bind().dialect.name
    session.execute(
        insert_ignore(dialect, table(StoreTask)),
        [{"name": name, "position": 0, "done": False, "updated_at": now}],
    )
    task = session.get_one(StoreTask, name)
    task.position, task.done, task.updated_at = position, done, now


def run_store_tasks(engine: Engine) -> None:
    """Run every store task not yet done, from where it stopped (a kill loses one batch)."""
    for name, step in _store_tasks():
        with Session(engine) as session:
            row = session.execute(select(StoreTask).where(StoreTask.name == name)).scalar()
            if row is not None and row.done:
                continue
            position = row.position if row is not None else 0
        while True:
            reached = step(engine, position)
            if reached is None:
                break
            position = reached
        with Session(engine) as session, session.begin():
            save_position(session, name, position, done=True)


def pending_store_tasks(engine: Engine) -> list[str]:
    with Session(engine) as session:
        done = set(
            session.execute(select(StoreTask.name).where(StoreTask.done.is_(True))).scalars()
        )
    return [name for name, _ in _store_tasks() if name not in done]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def refuse_newer_schema(engine: Engine) -> None:
    """Raise `SchemaTooNew` when the database's revision is not one of this version's."""
    found = current_revision(engine)
    if found is None:
        return
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if found not in known:
        raise SchemaTooNew(engine.url.render_as_string(hide_password=True), found)


def is_current(engine: Engine) -> bool:
    """The schema is at head and every store task has run."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return current_revision(engine) == head and not pending_store_tasks(engine)
