"""SQL helpers and the candidate row shared by the search backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import TextClause, bindparam, text

from bridge.core.search_language.query import Match, Query
from bridge.store.tables import UTCDateTime


class Candidate(NamedTuple):
    """A matching message as a backend reads it, with the engine's text relevance
    (BM25 on SQLite, ts_rank on PostgreSQL; 1.0 when no words were searched)."""

    pk: int
    thread_id: int
    sort_date: datetime | str
    relevance: float


def typed_sql(sql: str, params: dict[str, Any]) -> TextClause:
    """`text(sql)` with the date filters bound as UTC datetimes on either dialect."""
    clause = text(sql)
    dates = [bindparam(name, type_=UTCDateTime()) for name in ("before", "after") if name in params]
    return clause.bindparams(*dates) if dates else clause


def field_items(query: Query, *, subject: bool) -> Iterator[Match]:
    """The positive words, phrases and prefixes of `query` that can hit a field
    (`subject:` ones only the subject), each marked as searched in that field."""
    for leaf in query.leaves():
        if subject or not leaf.subject:
            yield Match(leaf.tokens, subject=True, prefix=leaf.prefix)
