"""SQL helpers shared by the search backends."""

from __future__ import annotations

from typing import Any

from sqlalchemy import TextClause, bindparam, text

from bridge.store.tables import UTCDateTime


def typed_sql(sql: str, params: dict[str, Any]) -> TextClause:
    """`text(sql)` with the date filters bound as UTC datetimes on either dialect."""
    clause = text(sql)
    dates = [bindparam(name, type_=UTCDateTime()) for name in ("before", "after") if name in params]
    return clause.bindparams(*dates) if dates else clause
