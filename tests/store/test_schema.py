"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from bridge.store.migrate import is_current
from bridge.store.tables import Base


def _not_search_index(obj: object, name: str | None, type_: str, *_: object) -> bool:
    return not (type_ == "table" and name and name.startswith(("message_fts", "message_search")))


def test_migrations_match_the_models(engine: Engine) -> None:
    assert is_current(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _not_search_index})
        assert compare_metadata(context, Base.metadata) == []


def test_sqlite_runs_in_wal_mode_with_the_search_index(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert "message_fts" in tables
        else:
            assert "message_search" in tables
