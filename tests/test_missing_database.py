"""A command that only reads never creates the database it is pointed at."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from bridge.cli import main
from bridge.store.db import normalize_url

READERS = [
    ["search", "budget"],
    ["search", "--json", "budget"],
    ["thread", "42"],
    ["export"],
    ["export", "--format", "mbox"],
    ["raw", "<a@example.com>"],
    ["login-link", "alice@example.com"],
    ["quarantine", "list"],
    ["digest", "preview", "--to", "alice@example.com"],
    ["access", "show", "alice@example.com"],
    ["audit"],
    ["collisions", "list"],
    ["rules", "replay"],
    ["db", "current"],
]


@pytest.mark.parametrize("argv", READERS, ids=lambda argv: " ".join(argv[:2]))
def test_a_reader_on_a_missing_sqlite_file_says_so_and_creates_nothing(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert main(argv) == 2  # on the built-in default, sqlite:///var/bridge.db
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f"bridge: error: sqlite:///var/bridge.db ({tmp_path}/var/bridge.db): no such database; "
    )
    assert "`bridge db upgrade` creates it" in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []

    absolute = tmp_path / "state" / "bridge.db"
    assert main([*argv, "--db", f"sqlite:///{absolute}"]) == 2
    assert capsys.readouterr().err.startswith(f"bridge: error: sqlite:///{absolute}: no such")
    assert list(tmp_path.iterdir()) == []


def test_writers_create_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "var" / "bridge.db").exists()
    assert main(["search", "budget"]) == 0
    assert capsys.readouterr().out.endswith("0 of 0 threads\n")
    mbox = tmp_path / "one.mbox"
    mbox.write_bytes(
        b"From x Thu Jan  1 00:00:00 1970\nMessage-ID: <a@example.com>\n"
        b"From: a@example.com\nSubject: budget\n\nthe budget\n"
    )
    assert main(["import", "--quiet", "--db", str(tmp_path / "new" / "b.db"), str(mbox)]) == 0
    assert (tmp_path / "new" / "b.db").exists()


@pytest.mark.postgres
def test_a_reader_on_a_missing_postgres_database_says_so(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = pg_database.rsplit("/", 1)[0] + f"/bridge_missing_{uuid.uuid4().hex[:8]}"
    shown = missing.replace("+psycopg", "")
    assert main(["search", "budget", "--db", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bridge: error: {shown}: no such database; "), err

    # A database that exists but holds no Bridge schema is left untouched.
    engine = create_engine(normalize_url(pg_database))
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        for argv in (["search", "budget"], ["login-link", "alice@example.com"]):
            assert main([*argv, "--db", pg_database]) == 2
            err = capsys.readouterr().err
            assert "no Bridge database there (no schema)" in err, err
        assert inspect(engine).get_table_names() == []
        # In a process of its own: the command leaves its engine to the exit.
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "db", "upgrade", "--db", pg_database],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "messages" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_an_output_file_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    for target, problem in ((tmp_path, "Is a directory"), (tmp_path / "no" / "x", "No such file")):
        assert main(["export", "-o", str(target)]) == 1
        err = capsys.readouterr().err
        assert err == f"bridge: error: {target}: cannot write: {problem}" + (
            "\n" if problem == "Is a directory" else " or directory\n"
        )
