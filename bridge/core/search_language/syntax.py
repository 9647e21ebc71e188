"""A parsed `Query` in each backend's syntax: SQLite FTS5 MATCH, PostgreSQL tsquery and tsvector.

Every token is quoted, so no user input reaches either engine's syntax, and
both get the same folded tokens (see core/search_language/query.py): a word, phrase or prefix
matches the same messages in both. Groups nest at most four deep (the parser
allows one level of parentheses), so the recursion below is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bridge.core.search_language.model import AnyOf, Match, Node, Query
from bridge.core.search_language.tokens import tokenize

MAX_POSITION = 16383  # PostgreSQL's largest tsvector position
FIELD_GAP = 100  # positions left between fields so a phrase never spans two
_MAX_LEXEME_BYTES = 2000  # PostgreSQL refuses lexemes over 2047 bytes
_MAX_POSITIONS_PER_LEXEME = 256  # PostgreSQL keeps no more
_MAX_TSVECTOR_BYTES = 1_000_000  # PostgreSQL refuses lexeme data over 1 MB
_COLUMN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _pg_lexeme(token: str) -> str:
    """Quote a token for tsvector/tsquery input, cut under PostgreSQL's size limit."""
    data = token.encode()
    if len(data) > _MAX_LEXEME_BYTES:
        token = data[:_MAX_LEXEME_BYTES].decode(errors="ignore")
    return "'" + token.replace("\\", "\\\\").replace("'", "''") + "'"


def _clean(tokens: Sequence[str]) -> list[str]:
    """Tokens fit for either backend: NUL ends strings in both, and an empty
    token is a syntax error in tsquery. tokenize() never makes either, but a
    Query can be built by hand."""
    cleaned = (token.replace("\x00", "") for token in tokens)
    return [token for token in cleaned if token]


def _join(parts: Sequence[str | None], operator: str) -> str | None:
    kept = [part for part in parts if part]
    if len(kept) < 2:
        return kept[0] if kept else None
    return "(" + operator.join(kept) + ")"


# --------------------------------------------------------------------------- SQLite FTS5


def _fts5_string(tokens: Sequence[str]) -> str | None:
    tokens = _clean(tokens)
    return '"' + " ".join(tokens).replace('"', '""') + '"' if tokens else None


def _fts5_node(node: Node, column: str) -> str | None:
    if isinstance(node, Match):
        phrase = _fts5_string(node.tokens)
        if phrase is None:
            return None
        if node.prefix:
            phrase += " *"  # FTS5: the string's last token is a prefix
        return f"{{{column}}} : {phrase}" if node.subject else phrase
    if isinstance(node, AnyOf):
        return _join([_fts5_node(option, column) for option in node.options], " OR ")
    positive = _join([_fts5_node(item, column) for item in node.items], " AND ")
    without = _join([_fts5_node(item, column) for item in node.without], " OR ")
    if positive is None or without is None:
        return positive
    return f"({positive} NOT {without})"


def _fts5_excluded(query: Query, column: str) -> str | None:
    items = [_fts5_string(x.split(" ")) for x in query.excluded]
    items += [_fts5_node(node, column) for node in query.excluded_groups]
    kept = [item for item in items if item]
    return " OR ".join(kept) if kept else None


def fts5_match(query: Query, *, subject_column: str = "subject") -> str | None:
    """An SQLite FTS5 MATCH expression for the query's words; None when it has none.

    Every token is double-quoted, so no user input reaches FTS5's syntax.
    Words search every column of the table; `subject:` ones `subject_column`.
    Excluded words narrow it here only when there is a positive word (see
    `fts5_excluded` for a search narrowed by operators alone).
    """
    if not _COLUMN_RE.fullmatch(subject_column):
        raise ValueError(f"not a column name: {subject_column!r}")
    items = [_fts5_string([t]) for t in query.terms]
    items += [_fts5_string(p) for p in query.phrases]
    subject = (_fts5_string(p) for p in query.subject)
    items += [f"{{{subject_column}}} : {p}" for p in subject if p]
    items += [_fts5_node(node, subject_column) for node in query.groups]
    positive = [item for item in items if item]
    if not positive:
        return None
    expression = " AND ".join(positive)
    excluded = _fts5_excluded(query, subject_column)
    if excluded:
        expression = f"({expression}) NOT ({excluded})"
    return expression


def fts5_excluded(query: Query) -> str | None:
    """An FTS5 expression matching what the query excludes, for a search with no
    positive word (`from:alice -acme`); None when `fts5_match` already has it."""
    if fts5_match(query) is not None:
        return None
    return _fts5_excluded(query, "subject")


# --------------------------------------------------------------------------- PostgreSQL


def _ts_node(node: Node, weight: str) -> str | None:
    if isinstance(node, Match):
        suffix = ":" + weight if node.subject else ""
        lexemes = [_pg_lexeme(t) + suffix for t in _clean(node.tokens)]
        if lexemes and node.prefix:
            # 'contra':*A: the lexeme is a prefix, still restricted to the weight.
            lexemes[-1] = lexemes[-1].removesuffix(suffix) + ":*" + suffix.lstrip(":")
        return _join(lexemes, " <-> ")
    if isinstance(node, AnyOf):
        return _join([_ts_node(option, weight) for option in node.options], " | ")
    positive = [_ts_node(item, weight) for item in node.items]
    if not any(positive):
        return None
    without = [_ts_node(item, weight) for item in node.without]
    return _join(positive + ["!" + item for item in without if item], " & ")


def _ts_excluded(query: Query, weight: str) -> list[str]:
    excluded = [_ts_node(Match(tuple(x.split(" "))), weight) for x in query.excluded]
    excluded += [_ts_node(node, weight) for node in query.excluded_groups]
    return [item for item in excluded if item]


def tsquery_text(query: Query, *, subject_weight: str = "A") -> str | None:
    """PostgreSQL tsquery text for the query's words; None when it has none.

    Use it as `%s::tsquery`: lexemes are then taken verbatim, exactly as
    `tsvector_literal` stores them. `to_tsquery('simple', %s)` accepts it too
    but re-parses each word and drops some (², ①, private-use characters).
    `subject:` words must carry `subject_weight` in the tsvector.
    """
    if subject_weight not in ("A", "B", "C", "D"):
        raise ValueError(f"not a tsvector weight: {subject_weight!r}")
    items = [Match((t,)) for t in query.terms]
    items += [Match(p) for p in query.phrases]
    items += [Match(p, subject=True) for p in query.subject]
    rendered = [_ts_node(node, subject_weight) for node in (*items, *query.groups)]
    positive = [item for item in rendered if item]
    if not positive:
        return None
    return " & ".join(positive + ["!" + item for item in _ts_excluded(query, subject_weight)])


def tsquery_excluded(query: Query) -> str | None:
    """tsquery text matching what the query excludes, for a search with no
    positive word (`from:alice -acme`); None when `tsquery_text` already has it."""
    if tsquery_text(query) is not None:
        return None
    excluded = _ts_excluded(query, "A")
    return " | ".join(excluded) if excluded else None


def tsvector_literal(fields: Sequence[tuple[str, str]]) -> str:
    """PostgreSQL tsvector input for weighted fields, e.g. `[("A", subject), ("B", body)]`.

    Positions count across fields with a gap of FIELD_GAP between them; past
    MAX_POSITION tokens stay searchable at that position. Lexemes beyond
    PostgreSQL's limits (bytes per lexeme, positions per lexeme, total size)
    are cut, capped or dropped so the literal is always accepted. Linear time.
    """
    positions: dict[str, list[str]] = {}
    last: dict[str, int] = {}
    budget = _MAX_TSVECTOR_BYTES
    position = 1
    for index, (weight, text) in enumerate(fields):
        weight = weight.upper()
        if weight not in ("A", "B", "C", "D"):
            raise ValueError(f"not a tsvector weight: {weight!r}")
        if index:
            position += FIELD_GAP
        for token in tokenize(text):
            at = min(position, MAX_POSITION)
            position += 1
            entry = positions.get(token)
            if entry is None:
                size = len(token.encode()) + 16
                if size > budget:
                    continue
                budget -= size
                entry = positions[token] = []
            elif last[token] == at or len(entry) >= _MAX_POSITIONS_PER_LEXEME:
                continue
            last[token] = at
            entry.append(f"{at}{weight}")
    return " ".join(f"{_pg_lexeme(t)}:{','.join(p)}" for t, p in positions.items())
