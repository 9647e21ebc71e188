"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from bridge.errors import SchemaTooNew
from bridge.store.db import make_engine
from bridge.store.migrate import is_current, upgrade
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


def test_a_schema_newer_than_the_code_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaTooNew, match="revision 9999, newer than this version"):
        upgrade(engine)
    with engine.connect() as conn:  # refused before touching anything
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"


@pytest.mark.parametrize("command", [["search", "anything"], ["run"]])
def test_commands_and_the_daemon_refuse_a_newer_schema(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "bridge.db"
    engine = make_engine(str(db))
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    result = subprocess.run(
        [sys.executable, "-m", "bridge", *command, "--db", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "newer than this version of Bridge" in result.stderr
