"""Running a query: filters in SQL, text matching in the backend, ranking and snippets here.

Ranking is the backend's text relevance (BM25 on SQLite, ts_rank on
PostgreSQL, both weighting subject > new text > quoted history) times a
recency factor; messages are grouped by thread and a thread ranks by its
best message. Snippets are made in Python so both backends show the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bridge.core.query import Query, parse_query
from bridge.core.snippets import highlight
from bridge.search.sql import typed_sql
from bridge.store.blobs import unpack_body

MAX_CANDIDATES = 5000
RECENCY_HALF_LIFE_DAYS = 365.0


@dataclass(frozen=True, slots=True)
class SearchHit:
    thread_id: int
    subject: str
    message_id: str
    date: datetime | None
    sender: str
    snippet: str
    score: float
    matches: int  # matching messages in the thread
    thread_messages: int


@dataclass(frozen=True, slots=True)
class SearchResults:
    query: str
    hits: list[SearchHit]
    total_threads: int
    hints: tuple[str, ...] = field(default_factory=tuple)


def search(
    session: Session,
    query_text: str,
    *,
    limit: int = 20,
    offset: int = 0,
    now: datetime | None = None,
    visible: Callable[[str, dict[str, Any]], None] | None = None,
    mark: tuple[str, str] = ("<mark>", "</mark>"),
    escape: bool = True,
) -> SearchResults:
    """Threads matching `query_text`, best first.

    `now` anchors the recency factor (default: the newest message matched,
    so results do not drift with the clock in tests).
    """
    query = parse_query(query_text)
    dialect = session.get_bind().dialect.name
    where, params = _filters(query)
    if dialect == "sqlite":
        from bridge.search import sqlite_fts5 as backend
    else:
        from bridge.search import postgres as backend  # type: ignore[no-redef]
    scored = backend.text_hits(session, query, where, params, MAX_CANDIDATES)
    if scored is None:
        if query.is_empty():
            return SearchResults(query_text, [], 0, query.hints)
        scored = _filter_only(session, where, params)
    if not scored:
        return SearchResults(query_text, [], 0, query.hints)
    info = _message_info(session, [pk for pk, _ in scored])
    anchor = now or max(row["sort_date"] for row in info.values())
    best: dict[int, tuple[float, int]] = {}
    counts: dict[int, int] = {}
    for pk, relevance in scored:
        row = info[pk]
        score = relevance * _recency(anchor, row["sort_date"])
        thread = row["thread_id"]
        counts[thread] = counts.get(thread, 0) + 1
        current = best.get(thread)
        if current is None or (score, -pk) > (current[0], -current[1]):
            best[thread] = (score, pk)
    ordered = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
    page = ordered[offset : offset + limit]
    hits = [
        _hit(session, info[pk], thread, score, counts[thread], query, mark, escape)
        for thread, (score, pk) in page
    ]
    return SearchResults(query_text, hits, len(ordered), query.hints)


def _recency(anchor: datetime, when: datetime) -> float:
    age_days = max(0.0, (_aware(anchor) - _aware(when)).total_seconds() / 86400.0)
    # Halves the boost, not the score: an old exact match still beats a new weak one.
    return 1.0 + math.pow(0.5, age_days / RECENCY_HALF_LIFE_DAYS)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _filters(query: Query) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    person_match = "(p.address LIKE :{n} OR lower(p.name) LIKE :{n})"
    for i, value in enumerate(query.from_):
        name = f"from{i}"
        params[name] = f"%{_like_escape(value)}%"
        clauses.append(
            "m.sender_id IN (SELECT p.id FROM people p WHERE " + person_match.format(n=name) + ")"
        )
    for kind, values in (("to", query.to), ("cc", query.cc)):
        for i, value in enumerate(values):
            name = f"{kind}{i}"
            params[name] = f"%{_like_escape(value)}%"
            clauses.append(
                "EXISTS (SELECT 1 FROM recipients r JOIN people p ON p.id = r.person_id "
                f"WHERE r.message_pk = m.id AND r.kind = '{kind}' AND "
                + person_match.format(n=name)
                + ")"
            )
    if query.has_attachment:
        clauses.append("m.has_attachment")
    for i, value in enumerate(query.filenames):
        name = f"file{i}"
        params[name] = f"%{_like_escape(value)}%"
        clauses.append(
            "EXISTS (SELECT 1 FROM attachments a WHERE a.message_pk = m.id "
            f"AND lower(a.filename) LIKE :{name})"
        )
    if query.before is not None:
        params["before"] = datetime.combine(query.before, time.min, tzinfo=UTC)
        clauses.append("m.sort_date < :before")
    if query.after is not None:
        params["after"] = datetime.combine(query.after, time.min, tzinfo=UTC)
        clauses.append("m.sort_date >= :after")
    for i, space in enumerate(query.spaces):
        name = f"space{i}"
        params[name] = space
        clauses.append(f"m.thread_id IN (SELECT t.id FROM threads t WHERE t.space = :{name})")
    where = "".join(f" AND {clause}" for clause in clauses)
    return where, params


def _like_escape(value: str) -> str:
    return value.lower().replace("%", "").replace("_", "")


def _filter_only(session: Session, where: str, params: dict[str, Any]) -> list[tuple[int, float]]:
    sql = f"SELECT m.id FROM messages m WHERE 1=1 {where} ORDER BY m.sort_date DESC LIMIT :limit"
    rows = session.execute(typed_sql(sql, params), {**params, "limit": MAX_CANDIDATES})
    return [(pk, 1.0) for (pk,) in rows]


def _message_info(session: Session, pks: list[int]) -> dict[int, dict[str, Any]]:
    info: dict[int, dict[str, Any]] = {}
    for start in range(0, len(pks), 900):
        chunk = pks[start : start + 900]
        rows = session.execute(
            text(
                "SELECT m.id, m.thread_id, m.sort_date, m.date FROM messages m "
                "WHERE m.id IN (" + ",".join(str(int(pk)) for pk in chunk) + ")"
            )
        )
        for pk, thread_id, sort_date, date in rows:
            info[pk] = {
                "id": pk,
                "thread_id": thread_id,
                "sort_date": _as_datetime(sort_date),
                "date": _as_datetime(date) if date is not None else None,
            }
    return info


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    return _aware(datetime.fromisoformat(str(value)))


def _hit(
    session: Session,
    row: dict[str, Any],
    thread_id: int,
    score: float,
    matches: int,
    query: Query,
    mark: tuple[str, str],
    escape: bool,
) -> SearchHit:
    details = (
        session.execute(
            text(
                "SELECT m.message_id, m.subject, m.body, p.address, "
                "p.name, t.subject AS thread_subject, t.message_count "
                "FROM messages m JOIN threads t ON t.id = m.thread_id "
                "LEFT JOIN people p ON p.id = m.sender_id WHERE m.id = :pk"
            ),
            {"pk": row["id"]},
        )
        .mappings()
        .one()
    )
    body = unpack_body(session.connection(), details["body"])
    snippet = ""
    for text_ in (body.new_text, body.quoted_text, details["subject"]):
        candidate = highlight(text_, query, mark=mark, escape=escape)
        if mark[0] in candidate:
            snippet = candidate
            break
    if not snippet:
        snippet = highlight(body.new_text or details["subject"], query, mark=mark, escape=escape)
    return SearchHit(
        thread_id=thread_id,
        subject=details["thread_subject"],
        message_id=details["message_id"],
        date=row["date"],
        sender=details["address"] or "",
        snippet=snippet,
        score=round(score, 6),
        matches=matches,
        thread_messages=details["message_count"],
    )
