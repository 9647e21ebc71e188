"""PostgreSQL backend: a weighted tsvector per message, built from Bridge's own tokens."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from bridge.core.search_language.query import Query
from bridge.core.search_language.syntax import tsquery_excluded, tsquery_text, tsvector_literal
from bridge.search.sql import Candidate, field_items, typed_sql

# ts_rank weights for {D, C, B, A}: quoted history D, new text B, subject A,
# in the same 1 : 4 : 8 proportion as the SQLite backend's BM25 column weights.
_WEIGHTS = "{0.1, 0.2, 0.4, 0.8}"


def index(conn: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    conn.exec_driver_sql(
        "INSERT INTO message_search(message_pk, document) VALUES (%s, %s::tsvector)",
        [(pk, tsvector_literal([("A", s), ("B", n), ("D", q)])) for pk, s, n, q in rows],
    )


def _any_in(query: Query, weight: str) -> str | None:
    """tsquery text: some word or phrase of `query` at `weight` (the field it is in)."""
    parts = [
        tsquery_text(Query(groups=(item,)), subject_weight=weight)
        for item in field_items(query, subject=weight == "A")
    ]
    kept = [f"({part})" for part in parts if part]
    return " | ".join(kept) if kept else None


def excluded_clause(query: Query, params: dict[str, Any]) -> str:
    """SQL keeping the messages without the query's excluded words, for a search
    narrowed by operators alone (`from:alice -acme`); "" when there is none."""
    excluded = tsquery_excluded(query)
    if excluded is None:
        return ""
    params["excluded"] = excluded
    return (
        " AND NOT EXISTS (SELECT 1 FROM message_search xs WHERE xs.message_pk = m.id"
        " AND xs.document @@ CAST(:excluded AS tsquery))"
    )


def text_candidates(
    session: Session, query: Query, where: str, params: dict[str, Any], cap: int
) -> tuple[list[Candidate], bool] | None:
    """Same candidates as the SQLite backend (see there); None when the query has no words."""
    tsquery = tsquery_text(query)
    if tsquery is None:
        return None
    # psycopg prepares a statement run five times, and PostgreSQL's generic plan
    # for it cannot see how common the words are (a word in every message then
    # costs seconds): plan each search for its own words, in this transaction.
    session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    params = {**params, "tsquery": tsquery}
    relevance = f"ts_rank('{_WEIGHTS}', s.document, CAST(:tsquery AS tsquery), 1)"

    def read(narrow: tuple[str, str] | None, limit: int) -> list[Candidate]:
        extra = ""
        if narrow is not None:
            weight, params["narrow"] = narrow
            # ts_filter(document, weight) has a GIN index of its own (migration
            # 0003): hits in one field are found without reading every document.
            field = f"ts_filter(s.document, '{{{weight.lower()}}}')"
            extra = f" AND {field} @@ CAST(:narrow AS tsquery)"
        # Rank only the rows kept: ts_rank on every match of a common word
        # would cost far more than finding them.
        sql = (
            f"SELECT c.id, c.thread_id, c.sort_date, {relevance} FROM ("
            "SELECT m.id, m.thread_id, m.sort_date "
            "FROM message_search s JOIN messages m ON m.id = s.message_pk "
            f"WHERE s.document @@ CAST(:tsquery AS tsquery){extra} {where} "
            "ORDER BY m.id DESC LIMIT :limit) AS c "
            "JOIN message_search s ON s.message_pk = c.id"
        )
        rows = session.execute(typed_sql(sql, params), {**params, "limit": limit})
        return [Candidate(*row) for row in rows]

    rows = read(None, cap + 1)
    capped = len(rows) > cap
    found = {row.pk: row for row in rows[:cap]}
    if capped:
        for weight in ("A", "B"):
            narrow = _any_in(query, weight)
            if narrow is not None:
                for row in read((weight, narrow), cap):
                    found.setdefault(row.pk, row)
    return list(found.values()), capped


def thread_match_counts(
    session: Session, query: Query, where: str, params: dict[str, Any], threads: list[int]
) -> dict[int, int]:
    """How many messages of each thread match the whole query."""
    tsquery = tsquery_text(query)
    if tsquery is None or not threads:
        return {}
    sql = (
        "SELECT m.thread_id, count(*) FROM messages m "
        "JOIN message_search s ON s.message_pk = m.id "
        f"WHERE m.thread_id IN ({','.join(str(int(t)) for t in threads)}) {where} "
        "AND s.document @@ CAST(:tsquery AS tsquery) GROUP BY m.thread_id"
    )
    rows = session.execute(typed_sql(sql, params), {**params, "tsquery": tsquery})
    return {thread: count for thread, count in rows}
