"""PostgreSQL backend: a weighted tsvector per message, built from Bridge's own tokens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from bridge.core.query import Query, tsquery_text, tsvector_literal
from bridge.search.sql import typed_sql

# ts_rank weights for {D, C, B, A}: quoted history D, new text B, subject A.
WEIGHTS = "{0.1, 0.2, 0.4, 0.8}"


def index(conn: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    conn.exec_driver_sql(
        "INSERT INTO message_search(message_pk, document) VALUES (%s, %s::tsvector)",
        [(pk, tsvector_literal([("A", s), ("B", n), ("D", q)])) for pk, s, n, q in rows],
    )


def text_hits(
    session: Session, query: Query, where: str, params: dict[str, Any], limit: int
) -> list[tuple[int, float]] | None:
    tsquery = tsquery_text(query)
    if tsquery is None:
        return None
    sql = (
        f"SELECT m.id, ts_rank('{WEIGHTS}', s.document, q.query, 1) AS score "
        "FROM message_search s JOIN messages m ON m.id = s.message_pk, "
        "CAST(:tsquery AS tsquery) AS q(query) "
        f"WHERE s.document @@ q.query {where} ORDER BY score DESC, m.id LIMIT :limit"
    )
    rows = session.execute(typed_sql(sql, params), {**params, "tsquery": tsquery, "limit": limit})
    return [(pk, float(score)) for pk, score in rows]
