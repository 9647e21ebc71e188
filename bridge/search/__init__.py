"""Full-text search: one query language, two backends with the same results.

Tokens are made and accent-folded in Python (`core.query`), so SQLite FTS5
and PostgreSQL index and match exactly the same words.
"""

from __future__ import annotations

from sqlalchemy import Connection

from bridge.search.engine import SearchHit, SearchResults, search


def index_messages(conn: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    """Add stored messages (pk, subject, new text, quoted text) to the full-text index."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        from bridge.search import sqlite_fts5 as backend
    else:
        from bridge.search import postgres as backend  # type: ignore[no-redef]
    backend.index(conn, rows)


__all__ = ["SearchHit", "SearchResults", "index_messages", "search"]
