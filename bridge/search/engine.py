"""Running a query: filters in SQL, text matching in the backend, ranking and snippets here.

Both backends match the same messages (the tokens are made in Python, see
core/search_language/query.py). Each ranks them with its own text relevance, weighting the
subject 8, new text 4 and quoted history 1: BM25 on SQLite FTS5, ts_rank on
PostgreSQL. Relevance is multiplied by a recency factor; messages are
grouped by thread and a thread ranks by its best message.

Speed: a backend reads at most CANDIDATES matches, newest stored first,
plus the newest ones with a hit in the subject and in new text, so a word
found in every message costs about what a rare one does. Bodies are
decompressed only for the page shown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bridge.core.access import Viewer
from bridge.core.search_language.query import Query, fold, parse_query
from bridge.core.search_language.snippets import highlight
from bridge.search.sql import Candidate, typed_sql
from bridge.store.blobs import unpack_body_with_raw
from bridge.store.visibility.access import thread_views
from bridge.store.visibility.access_sql import viewer_clause

CANDIDATES = 500
RECENCY_HALF_LIFE_DAYS = 365.0
# Snippets are cut from this much text around the first hit (see _focus).
SNIPPET_FOCUS_CHARS = 720


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
    # True when more messages matched than were ranked: total_threads is then a floor.
    more: bool = False


def search(
    session: Session,
    query_text: str,
    *,
    limit: int = 20,
    offset: int = 0,
    now: datetime | None = None,
    viewer: Viewer | None = None,
    mark: tuple[str, str] = ("<mark>", "</mark>"),
    escape: bool = True,
) -> SearchResults:
    """Threads matching `query_text`, best first.

    `now` anchors the recency factor (default: the newest message matched,
    so results do not drift with the clock in tests). With a `viewer`, only
    the messages they may see are matched, ranked and counted (None: all,
    for the command line).
    """
    query = parse_query(query_text)
    if session.get_bind().dialect.name == "sqlite":
        from bridge.search import sqlite_fts5 as backend
    else:
        from bridge.search import postgres as backend  # type: ignore[no-redef]
    where, params = _filters(session, query)
    # Exclusions with no word to search for (`from:alice -acme`) narrow the filters.
    where += backend.excluded_clause(query, params)
    seen_params: dict[str, Any] = {}
    seen = viewer_clause(session, viewer, seen_params) if viewer is not None else ""
    # Before the backends cut and rank: the reader's matches, all of them.
    where += seen
    params.update(seen_params)
    found = backend.text_candidates(session, query, where, params, CANDIDATES)
    text_query = found is not None
    if found is None:
        if query.is_empty():
            return SearchResults(query_text, [], 0, query.hints)
        found = _filter_only(session, where, params, CANDIDATES)
    candidates, capped = found
    if not candidates:
        return SearchResults(query_text, [], 0, query.hints)
    ordered, counts = _rank(candidates, now)
    start = max(0, offset)
    page = ordered[start : start + max(0, limit)]
    if capped and page:
        # Only some of a common word's matches were ranked: count the page's threads exactly.
        threads = [thread for thread, _, _ in page]
        if text_query:
            counts.update(backend.thread_match_counts(session, query, where, params, threads))
        else:
            counts.update(_filter_counts(session, where, params, threads))
    hits = _hits(session, page, counts, query, mark, escape)
    if viewer is not None and hits:
        # A thread's title and size as the reader sees it: from their messages only.
        views = thread_views(session, viewer, [h.thread_id for h in hits])
        hits = [
            replace(
                h,
                subject=views[h.thread_id].subject,
                thread_messages=views[h.thread_id].message_count,
            )
            for h in hits
            if h.thread_id in views
        ]
    return SearchResults(query_text, hits, len(ordered), query.hints, capped)


def _rank(
    candidates: list[Candidate], now: datetime | None
) -> tuple[list[tuple[int, float, int]], dict[int, int]]:
    """(thread, score, best message pk) best first, and matching messages per thread."""
    dates = {c.pk: _as_datetime(c.sort_date) for c in candidates}
    anchor = _aware(now) if now else max(dates.values())
    best: dict[int, tuple[float, int]] = {}
    counts: dict[int, int] = {}
    for c in candidates:
        age_days = max(0.0, (anchor - dates[c.pk]).total_seconds() / 86400.0)
        # Halves the boost, not the score: an old exact match still beats a new weak one.
        score = float(c.relevance) * (1.0 + math.pow(0.5, age_days / RECENCY_HALF_LIFE_DAYS))
        counts[c.thread_id] = counts.get(c.thread_id, 0) + 1
        current = best.get(c.thread_id)
        if current is None or (score, -c.pk) > (current[0], -current[1]):
            best[c.thread_id] = (score, c.pk)
    ordered = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))
    return [(thread, score, pk) for thread, (score, pk) in ordered], counts


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    return _aware(datetime.fromisoformat(str(value)))


def _filters(session: Session, query: Query) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for i, value in enumerate(query.from_):
        people = _people(session, value, params, f"from{i}")
        clauses.append(f"m.sender_id IN ({people})")
    for kind, values in (("to", query.to), ("cc", query.cc)):
        for i, value in enumerate(values):
            people = _people(session, value, params, f"{kind}{i}")
            clauses.append(
                "EXISTS (SELECT 1 FROM recipients r WHERE r.message_pk = m.id "
                f"AND r.kind = '{kind}' AND r.person_id IN ({people}))"
            )
    if query.has_attachment:
        clauses.append("m.has_attachment")
    for i, value in enumerate(query.filenames):
        name = f"file{i}"
        params[name] = f"%{_like_escape(value)}%"
        clauses.append(
            "EXISTS (SELECT 1 FROM attachments a WHERE a.message_pk = m.id "
            f"AND lower(a.filename) LIKE :{name} {_ESCAPE})"
        )
    if query.before is not None:
        params["before"] = datetime.combine(query.before, time.min, tzinfo=UTC)
        clauses.append("m.sort_date < :before")
    if query.after is not None:
        params["after"] = datetime.combine(query.after, time.min, tzinfo=UTC)
        clauses.append("m.sort_date >= :after")
    for i, flag in enumerate(query.is_flags):
        clauses.append(_is_clause(flag.strip().lower(), params, f"is{i}"))
    for i, tag in enumerate(query.tags):
        # Rule tags are stored sorted and comma-separated; any case matches.
        params[f"tag{i}"] = f"%,{_like_escape(tag)},%"
        clauses.append(f"lower(',' || m.tags || ',') LIKE :tag{i} {_ESCAPE}")
    for i, space in enumerate(query.spaces):
        name = f"space{i}"
        params[name] = space
        clauses.append(f"m.space = :{name}")
    where = "".join(f" AND {clause}" for clause in clauses)
    return where, params


_ESCAPE = "ESCAPE '\\'"


def _is_clause(flag: str, params: dict[str, Any], name: str) -> str:
    """`is:reply`, `is:private`, or any stored message flag (`is:auto-reply`, `is:bounce`)."""
    if flag == "reply":
        return "m.is_reply"
    if flag == "private":
        return "m.private"
    params[name] = f"%,{_like_escape(flag)},%"
    return f"(',' || m.flags || ',') LIKE :{name} {_ESCAPE}"


_PERSON_MATCH = f"(p.address LIKE :{{n}} {_ESCAPE} OR lower(p.name) LIKE :{{n}} {_ESCAPE})"
# Up to this many people matching `from:` etc. are inlined as ids, read once.
MAX_INLINE_PEOPLE = 500


def _people(session: Session, value: str, params: dict[str, Any], name: str) -> str:
    """SQL for the ids of the people whose address or name contains `value`."""
    pattern = f"%{_like_escape(value)}%"
    subquery = "SELECT p.id FROM people p WHERE " + _PERSON_MATCH.format(n=name)
    ids = session.execute(
        text(subquery + " LIMIT :limit"), {name: pattern, "limit": MAX_INLINE_PEOPLE + 1}
    ).scalars()
    found = sorted(int(pk) for pk in ids)
    if len(found) > MAX_INLINE_PEOPLE:
        params[name] = pattern
        return subquery
    return ",".join(map(str, found)) or "NULL"


def _like_escape(value: str) -> str:
    """`value` matched literally by LIKE: its `%`, `_` and `\\` escaped."""
    escaped = value.lower().replace("\\", "\\\\")
    return escaped.replace("%", "\\%").replace("_", "\\_")


def _filter_only(
    session: Session, where: str, params: dict[str, Any], cap: int
) -> tuple[list[Candidate], bool]:
    """The newest `cap` messages passing the filters (a query of operators only)."""
    sql = (
        "SELECT m.id, m.thread_id, m.sort_date, 1.0 FROM messages m "
        f"WHERE 1=1 {where} ORDER BY m.sort_date DESC, m.id DESC LIMIT :limit"
    )
    rows = session.execute(typed_sql(sql, params), {**params, "limit": cap + 1}).all()
    return [Candidate(*row) for row in rows[:cap]], len(rows) > cap


def _filter_counts(
    session: Session, where: str, params: dict[str, Any], threads: list[int]
) -> dict[int, int]:
    sql = (
        "SELECT m.thread_id, count(*) FROM messages m "
        f"WHERE m.thread_id IN ({','.join(str(int(t)) for t in threads)}) {where} "
        "GROUP BY m.thread_id"
    )
    return {thread: count for thread, count in session.execute(typed_sql(sql, params), params)}


def _hits(
    session: Session,
    page: list[tuple[int, float, int]],
    counts: dict[int, int],
    query: Query,
    mark: tuple[str, str],
    escape: bool,
) -> list[SearchHit]:
    """The page's hits, from one query for all its messages."""
    if not page:
        return []
    pks = ",".join(str(int(pk)) for _, _, pk in page)
    rows = session.execute(
        text(
            "SELECT m.id, m.message_id, m.subject, m.body, r.data AS raw, m.date, p.address, "
            "t.subject AS thread_subject, t.message_count "
            "FROM messages m JOIN threads t ON t.id = m.thread_id "
            "JOIN raw_messages r ON r.sha256 = m.raw_sha256 "
            f"LEFT JOIN people p ON p.id = m.sender_id WHERE m.id IN ({pks})"
        )
    ).mappings()
    details = {row["id"]: row for row in rows}
    conn = session.connection()
    hits = []
    for thread, score, pk in page:
        row = details[pk]
        body = unpack_body_with_raw(conn, row["body"], row["raw"])
        hits.append(
            SearchHit(
                thread_id=thread,
                subject=row["thread_subject"],
                message_id=row["message_id"],
                date=_as_datetime(row["date"]) if row["date"] is not None else None,
                sender=row["address"] or "",
                snippet=_snippet(
                    body.new_text, body.quoted_text, row["subject"], query, mark, escape
                ),
                score=float(f"{score:.6g}"),
                matches=counts[thread],
                thread_messages=row["message_count"],
            )
        )
    return hits


def _snippet(
    new_text: str, quoted_text: str, subject: str, query: Query, mark: tuple[str, str], escape: bool
) -> str:
    """The first of new text, quoted history and subject that shows a hit, marked."""
    words = _word_pattern(query)
    for value in (new_text, quoted_text, subject):
        focused = _focus(value, words)
        if focused is not None:
            return highlight(focused, query, mark=mark, escape=escape)
    return highlight((new_text or subject)[:SNIPPET_FOCUS_CHARS], query, mark=mark, escape=escape)


def _word_pattern(query: Query) -> re.Pattern[str] | None:
    """Any query word, phrase or prefix in folded text, roughly as tokens
    (verified by highlight)."""
    items = {(leaf.tokens, leaf.prefix) for leaf in query.leaves() if leaf.tokens}
    if not items:
        return None
    # A prefix may go on into the word; a whole word or phrase may not.
    parts = sorted(
        (
            r"[\W_]+".join(map(re.escape, tokens)) + ("" if prefix else r"(?![^\W_])")
            for tokens, prefix in items
        ),
        key=len,
        reverse=True,
    )
    return re.compile(rf"(?<![^\W_])(?:{'|'.join(parts)})")


def _focus(value: str, words: re.Pattern[str] | None) -> str | None:
    """The stretch of `value` around its first query word, None when it has none.

    Snippets tokenise what they are given, so a long message is cut to its
    first hit here (found on the folded text with one regex) to keep a page
    of snippets cheap whatever the size of the mail.
    """
    if words is None or not value:
        return None
    folded = fold(value)
    found = words.search(folded)
    if found is None:
        return None
    if len(value) <= SNIPPET_FOCUS_CHARS:
        return value
    if len(folded) != len(value):
        # Folding dropped combining marks: offsets no longer line up.
        start = max(0, found.start() - SNIPPET_FOCUS_CHARS)
        return value[start : start + 3 * SNIPPET_FOCUS_CHARS]
    start = max(0, found.start() - SNIPPET_FOCUS_CHARS // 3)
    return value[start : start + SNIPPET_FOCUS_CHARS]
