"""Engines from URLs, and the dialect quirks of SQLite and PostgreSQL in one place."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

DEFAULT_DB_URL = "sqlite:///var/bridge.db"


def normalize_url(url: str) -> str:
    """Accept a bare file path as a SQLite database, and pick the psycopg 3 driver."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


_SQLITE_BEGIN = "bridge_sqlite_begin"


def writer(engine: Engine) -> Engine:
    """The same engine for transactions that write: on SQLite they begin IMMEDIATE."""
    return engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})


def shown_url(url: str) -> str:
    """`url` as people read it: no password, no driver, a SQLite file's absolute path too."""
    parsed = make_url(normalize_url(url))
    shown = parsed.render_as_string(hide_password=True).replace("+psycopg", "", 1)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "")
        if not path.is_absolute():
            shown += f" ({Path.cwd() / path})"
    return shown


def make_engine(
    url: str, *, synchronous: str = "NORMAL", busy_timeout: float = 30.0, create: bool = True
) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys.

    With `create` False a SQLite file that does not exist is not created
    (nor its folders): `DatabaseMissing` is raised instead.

    `synchronous` is SQLite's: NORMAL is durable at each checkpoint of a WAL
    database and safe against corruption; FULL makes every commit durable,
    which the SMTP listener needs before it answers 250. `busy_timeout`
    (seconds) is how long a statement waits for another writer's lock
    (PostgreSQL: `lock_timeout`) before it fails as a transient error.
    """
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not create and not Path(database).exists():
            from bridge.errors import DatabaseMissing

            raise DatabaseMissing(shown_url(url))
        if database and database != ":memory:":
            _sqlite_file(url, Path(database))
        engine = create_engine(url, connect_args={"timeout": busy_timeout})
        _sqlite_pragmas(engine, synchronous, busy_timeout)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args(busy_timeout))


def _sqlite_file(url: str, path: Path) -> None:
    """Make the database's folder and check that the file opens, or say why not."""
    import sqlite3

    from bridge.errors import DatabaseUnusable

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DatabaseUnusable(
            shown_url(url), f"cannot create the folder {path.parent}: a file is in the way"
        ) from None
    except OSError as exc:
        raise DatabaseUnusable(
            shown_url(url), f"cannot create the folder {path.parent}: {exc.strerror}"
        ) from None
    if path.is_dir():
        raise DatabaseUnusable(shown_url(url), "is a folder, not a database file")
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise DatabaseUnusable(shown_url(url), f"cannot open the file: {exc}") from None


def _pg_connect_args(busy_timeout: float) -> dict[str, Any]:
    return {
        "application_name": os.environ.get("BRIDGE_APP_NAME", "bridge"),
        "options": f"-c lock_timeout={int(busy_timeout * 1000)}",
    }


def is_transient(exc: BaseException) -> bool:
    """A failure of the database (connection lost, disk full, lock timeout), not of a message.

    The same message may store a moment later: SMTP answers 451 so the MTA
    retries, IMAP leaves it for the next sync. Anything else (a value the
    store refuses, a bug tripped by one message) is the message's own, and
    it goes to quarantine.
    """
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError | OSError)


def _sqlite_pragmas(engine: Engine, synchronous: str, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; issue it ourselves
        # so a write transaction takes the lock at its start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # 16 KiB pages hold a typical compressed message without overflow pages
        # (a no-op once the database exists).
        cursor.execute("PRAGMA page_size=16384")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # A writer takes the write lock at BEGIN, waiting the busy timeout for
        # it; a deferred transaction that read first would fail at once when
        # another writer committed meanwhile (SQLITE_BUSY_SNAPSHOT).
        immediate = conn.get_execution_options().get(_SQLITE_BEGIN) == "IMMEDIATE"
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def insert_ignore(dialect_name: str, table: Any) -> Any:
    """An INSERT that skips rows whose key already exists (both dialects spell it ON CONFLICT)."""
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table).on_conflict_do_nothing()


class IdAllocator:
    """Hands out primary keys for bulk inserts, so rows can refer to each other before insert.

    SQLite: the writer holds the write lock for the whole batch, so max(id)+1
    onwards is free. PostgreSQL: taken from the column's sequence, in blocks.
    """

    BLOCK = 256

    def __init__(
        self, connection: Any, table: str, also_used: tuple[str, str] | None = None
    ) -> None:
        self.connection = connection
        self.table = table
        # Ids that live on elsewhere (a merged thread's redirect) are never reused.
        self.also_used = also_used
        self.sqlite = connection.dialect.name == "sqlite"
        self._next: int | None = None
        self._pool: list[int] = []

    def __call__(self) -> int:
        from sqlalchemy import text

        if self.sqlite:
            if self._next is None:
                used = f"SELECT coalesce(max(id), 0) FROM {self.table}"
                if self.also_used:
                    other, column = self.also_used
                    used = f"SELECT max(({used}), (SELECT coalesce(max({column}), 0) FROM {other}))"
                self._next = self.connection.execute(text(used)).scalar_one() + 1
            value = self._next
            self._next += 1
            return int(value)
        if not self._pool:
            rows = self.connection.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                    "FROM generate_series(1, :n)"
                ),
                {"table": self.table, "n": self.BLOCK},
            )
            self._pool = sorted((int(r[0]) for r in rows), reverse=True)
        return self._pool.pop()


def chunks(values: list[Any], size: int = 500) -> list[list[Any]]:
    """Slices small enough for an IN (...) list on every backend."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def bulk_insert(conn: Any, table: Any, rows: list[dict[str, Any]], *, ignore: bool = False) -> None:
    """INSERT many rows with the driver's executemany, skipping per-row SQLAlchemy work.

    The import writer's hot path: values are converted here the way the
    column types would (UTC datetimes; SQLite's text form), so rows read back
    exactly as if SQLAlchemy had written them.
    """
    if not rows:
        return
    columns = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" for _ in columns)
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
        sql = sql.replace("INSERT", verb, 1)
        params = [tuple(_sqlite_value(row[c]) for c in columns) for row in rows]
    else:
        marks = ", ".join("%s" for _ in columns)
        sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
        if ignore:
            sql += " ON CONFLICT DO NOTHING"
        params = [tuple(_pg_value(row[c]) for c in columns) for row in rows]
    conn.exec_driver_sql(sql, params)


def _sqlite_value(value: Any) -> Any:
    kind = type(value)
    if kind is datetime:
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if kind is bool:
        return int(value)
    return value


def _pg_value(value: Any) -> Any:
    if type(value) is datetime and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value
