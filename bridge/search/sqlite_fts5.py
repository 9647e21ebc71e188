"""SQLite FTS5 backend: an external-content index over the message columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from bridge.core.search_language.query import Query
from bridge.core.search_language.syntax import fts5_excluded, fts5_match
from bridge.search.sql import Candidate, field_items, typed_sql

# Filters leaving at most this many messages are checked message by message
# (a lookup costs about what reading 20 entries of the word's index does).
FEW_FILTERED = 200

# BM25 with the columns weighted: subject 8, new text 4, quoted history 1
# (FTS5's bm25 is negative, better matches lower).
_RELEVANCE_SQL = "-bm25(message_fts, 8.0, 4.0, 1.0)"


def index(conn: Connection, rows: list[tuple[int, str, str, str]]) -> None:
    conn.exec_driver_sql(
        "INSERT INTO message_fts(rowid, subject, new_text, quoted_text) VALUES (?, ?, ?, ?)",
        rows,
    )


def _any_in(query: Query, column: str) -> str | None:
    """An FTS5 expression: some word or phrase of `query` in `column`."""
    parts = [
        fts5_match(Query(groups=(item,)), subject_column=column)
        for item in field_items(query, subject=column == "subject")
    ]
    kept = [part for part in parts if part]
    return " OR ".join(kept) if kept else None


def excluded_clause(query: Query, params: dict[str, Any]) -> str:
    """SQL keeping the messages without the query's excluded words, for a search
    narrowed by operators alone (`from:alice -acme`); "" when there is none."""
    excluded = fts5_excluded(query)
    if excluded is None:
        return ""
    params["excluded"] = excluded
    return (
        " AND NOT EXISTS (SELECT 1 FROM message_fts WHERE message_fts MATCH :excluded"
        " AND message_fts.rowid = m.id)"
    )


def text_candidates(
    session: Session, query: Query, where: str, params: dict[str, Any], cap: int
) -> tuple[list[Candidate], bool] | None:
    """The newest `cap` matches, plus the newest `cap` with a hit in the subject and
    in new text; and whether matches were left out. None when the query has no words.

    Reading the index newest first and stopping at `cap` costs the same for a
    word in every message as for a rare one; the two narrower reads keep the
    best-placed hits of a common word among the candidates.
    """
    match = fts5_match(query)
    if match is None:
        return None
    if query.from_ or query.to or query.cc or query.filenames:
        few = _few_filtered(session, match, where, params, cap)
        if few is not None:
            return few, False
    # CROSS JOIN keeps FTS5 the outer loop, read in rowid order, so LIMIT stops it early.
    sql = (
        f"SELECT message_fts.rowid, m.thread_id, m.sort_date, {_RELEVANCE_SQL} "
        "FROM message_fts CROSS JOIN messages m ON m.id = message_fts.rowid "
        f"WHERE message_fts MATCH :match {where} ORDER BY message_fts.rowid DESC LIMIT :limit"
    )
    statement = typed_sql(sql, params)
    rows = session.execute(statement, {**params, "match": match, "limit": cap + 1}).all()
    capped = len(rows) > cap
    found = {row[0]: Candidate(*row) for row in rows[:cap]}
    if capped:
        for column in ("subject", "new_text"):
            narrow = _any_in(query, column)
            if narrow is None:
                continue
            arm = {**params, "match": f"({match}) AND ({narrow})", "limit": cap}
            for row in session.execute(statement, arm):
                found.setdefault(row[0], Candidate(*row))
    return list(found.values()), capped


def _few_filtered(
    session: Session, match: str, where: str, params: dict[str, Any], cap: int
) -> list[Candidate] | None:
    """When the people or file filters leave few messages, look each up in the
    index rather than read a common word's whole index entry; None otherwise."""
    sql = f"SELECT m.id FROM messages m WHERE 1=1 {where} LIMIT :limit"
    limit = min(cap, FEW_FILTERED)
    ids = session.execute(typed_sql(sql, params), {**params, "limit": limit + 1}).scalars().all()
    if len(ids) > limit:
        return None
    if not ids:
        return []
    listed = ",".join(str(int(pk)) for pk in ids)
    sql = (
        f"SELECT message_fts.rowid, m.thread_id, m.sort_date, {_RELEVANCE_SQL} "
        "FROM message_fts CROSS JOIN messages m ON m.id = message_fts.rowid "
        f"WHERE message_fts MATCH :match AND message_fts.rowid IN ({listed})"
    )
    return [Candidate(*row) for row in session.execute(text(sql), {"match": match})]


def thread_match_counts(
    session: Session, query: Query, where: str, params: dict[str, Any], threads: list[int]
) -> dict[int, int]:
    """How many messages of each thread match the whole query."""
    match = fts5_match(query)
    if match is None or not threads:
        return {}
    sql = (
        "SELECT m.thread_id, count(*) FROM messages m "
        f"WHERE m.thread_id IN ({','.join(str(int(t)) for t in threads)}) {where} "
        "AND EXISTS (SELECT 1 FROM message_fts WHERE message_fts MATCH :match "
        "AND message_fts.rowid = m.id) GROUP BY m.thread_id"
    )
    rows = session.execute(typed_sql(sql, params), {**params, "match": match})
    return {thread: count for thread, count in rows}
