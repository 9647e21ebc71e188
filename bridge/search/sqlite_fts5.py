"""SQLite FTS5 backend: an external-content index over the message columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from bridge.core.query import Query, fts5_match
from bridge.search.sql import typed_sql

# Column weights for bm25: subject, new text, quoted history.
WEIGHTS = (8.0, 4.0, 1.0)


def index(conn: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    conn.exec_driver_sql(
        "INSERT INTO message_fts(rowid, subject, new_text, quoted_text) VALUES (?, ?, ?, ?)",
        rows,
    )


def text_hits(
    session: Session, query: Query, where: str, params: dict[str, Any], limit: int
) -> list[tuple[int, float]] | None:
    """(message pk, relevance > 0) of the best text matches; None when the query has no words."""
    match = fts5_match(query)
    if match is None:
        return None
    sql = (
        "SELECT m.id, -bm25(message_fts, {w}) AS score FROM message_fts "
        "JOIN messages m ON m.id = message_fts.rowid "
        "WHERE message_fts MATCH :match {where} ORDER BY bm25(message_fts, {w}) LIMIT :limit"
    ).format(w=", ".join(str(w) for w in WEIGHTS), where=where)
    rows = session.execute(typed_sql(sql, params), {**params, "match": match, "limit": limit})
    return [(pk, float(score)) for pk, score in rows]
