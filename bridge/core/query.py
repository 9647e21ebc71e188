"""The search language: text → folded tokens, query text → `Query`, `Query` → backend syntax.

Both backends must give the same results, so tokenising and accent folding
happen here, identically for indexing and querying, and the backends only see
folded tokens. The rules copy SQLite FTS5's `unicode61 remove_diacritics 2`
(the embedded default), so FTS5 finds every token we produce even when it
indexes the raw text:

* a token is a maximal run of letters, digits (categories L*, N*) and
  private-use characters (Co); everything else separates, including `_`,
  `'`, `-`, `.`, `@` and most combining marks. The combining accents SQLite
  treats as removable (U+0300 acute, U+0308 diaeresis, ...) stay inside the
  token and are dropped, so a decomposed "re" U+0301 "union" is "reunion".
* each code point is case-folded to ONE code point (µ→μ, ς→σ, ſ→s, but ß and
  the ligatures œ, æ, ﬁ stay: SQLite never expands a character), and Latin
  letters lose their accents (é→e, ü→u; ø, ł, đ have no accent to remove;
  Greek and Cyrillic keep theirs).

Measured against SQLite 3.40 over all 282,230 assigned code points, 3,638
differ: characters newer than SQLite's Unicode tables (Cherokee and Georgian
case pairs, scripts and symbols added since Unicode 6), and ǡ/Ǡ, which SQLite
leaves accented. No library does this exact folding (unidecode
transliterates, PyICU is a heavy native dependency), hence this small one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import TypeVar

_T = TypeVar("_T")

# Combining marks that unicode61 keeps inside a token and then drops.
_REMOVABLE_MARKS = (
    "\u0300-\u0304\u0306-\u030c\u030f\u0311\u031b\u0323-\u0328\u032d\u032e\u0330\u0331"
)
_PRIVATE_USE = "\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd"
# `[^\W_]` is exactly str.isalnum(): letters and every kind of number.
TOKEN_RE = re.compile(rf"(?:[^\W_]|[{_REMOVABLE_MARKS}{_PRIVATE_USE}])+")
_MARK_RE = re.compile(f"[{_REMOVABLE_MARKS}]")

# SQLite removes accents from Latin letters only.
_LATIN_RANGES = ((0x00C0, 0x0250), (0x1E00, 0x1F00))


def _fold_char(ch: str) -> str:
    folded = ch.casefold()
    if len(folded) != 1:
        # Full case folding expands (ß→ss, ﬁ→fi); SQLite maps one to one.
        folded = ch.lower()[0]
    code = ord(folded)
    if any(lo <= code < hi for lo, hi in _LATIN_RANGES):
        parts = unicodedata.normalize("NFD", folded)
        # é→e, but letters with no decomposition (ø, ł, đ) or a non-ASCII
        # base (ǣ) stay, as in SQLite.
        if len(parts) > 1 and parts[0].isascii():
            return parts[0]
    elif _MARK_RE.fullmatch(folded):
        return ""
    return folded


def _fold_table() -> MappingProxyType[int, str]:
    # Precomputed for ASCII and Latin so European text folds with one
    # str.translate; it is read-only, not mutable state.
    codes = list(range(0x0000, 0x0250)) + list(range(0x0300, 0x0332)) + list(range(0x1E00, 0x1F00))
    table = {c: _fold_char(chr(c)) for c in codes}
    return MappingProxyType({c: f for c, f in table.items() if f != chr(c)})


_FOLD_TABLE = _fold_table()
# What the table leaves: runs of characters past Latin (no accents to strip).
_UNTABLED_RE = re.compile("[^\x00-\u024f\u0300-\u0331\u1e00-\u1eff]+")


def _fold_run(match: re.Match[str]) -> str:
    run = match.group()
    folded = run.casefold()
    # casefold never shrinks a character, so equal length means one to one;
    # a result back in Latin (Angstrom sign → å) may still have an accent.
    if len(folded) == len(run) and _UNTABLED_RE.fullmatch(folded):
        return folded
    return "".join(map(_fold_char, run))


def fold(text: str) -> str:
    """Lower-case `text` and remove Latin accents, character by character, like unicode61."""
    folded = text.translate(_FOLD_TABLE)
    if folded.isascii():
        return folded
    return _UNTABLED_RE.sub(_fold_run, folded)


def token_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """Yield (start, end, folded token) for each token of `text`, in order."""
    for match in TOKEN_RE.finditer(text):
        token = fold(match.group())
        if token:
            yield match.start(), match.end(), token


def tokenize(text: str) -> list[str]:
    """The folded tokens of `text`, in order: what both search backends index."""
    folded = (fold(word) for word in TOKEN_RE.findall(text))
    return [token for token in folded if token]


# --------------------------------------------------------------------------- parsing

_MAX_QUERY_CHARS = 1000
_OPERATORS = frozenset(
    {"from", "to", "cc", "subject", "filename", "has", "before", "after", "in", "is"}
)
_URL_SCHEMES = frozenset({"mailto", "tel", "sip", "urn"})
_ATTACHMENT_WORDS = frozenset({"attachment", "attachments", "attach", "file", "files"})
_OPEN_QUOTES = '"“„«'
_CLOSE_QUOTES = '"”“»'
_OPERATOR_RE = re.compile(r"([A-Za-z][A-Za-z_-]*):")
_DATE_RE = re.compile(r"(\d{4})(?:[-/.](\d{1,2})(?:[-/.](\d{1,2}))?)?")
_SPACE_RE = re.compile(r"\s+")


class Hint(str):
    """A note about how a query was read: English text, with its template and values.

    It is a `str` (the CLI and the API print it as it is); the viewer
    translates `template` and fills in `values` in the reader's language.
    """

    template: str
    values: dict[str, str]

    @classmethod
    def of(cls, template: str, **values: object) -> Hint:
        texts = {name: str(value) for name, value in values.items()}
        hint = cls(template.format(**texts))
        hint.template = template
        hint.values = texts
        return hint


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search. All text is folded; `excluded` entries are single
    tokens or space-joined token sequences (an excluded phrase)."""

    terms: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()
    excluded: tuple[str, ...] = ()
    subject: tuple[tuple[str, ...], ...] = ()
    from_: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    filenames: tuple[str, ...] = ()
    has_attachment: bool = False
    before: date | None = None
    after: date | None = None
    spaces: tuple[str, ...] = ()
    is_flags: tuple[str, ...] = ()
    hints: tuple[Hint, ...] = ()

    def is_empty(self) -> bool:
        """True when the query asks for nothing (hints alone do not count)."""
        return not (
            self.terms
            or self.phrases
            or self.excluded
            or self.subject
            or self.from_
            or self.to
            or self.cc
            or self.filenames
            or self.has_attachment
            or self.before
            or self.after
            or self.spaces
            or self.is_flags
        )


@dataclass(slots=True)
class _Builder:
    """Mutable scratch for one parse_query call; frozen into a Query at the end."""

    terms: list[str] = field(default_factory=list)
    phrases: list[tuple[str, ...]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    subject: list[tuple[str, ...]] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    hints: list[Hint] = field(default_factory=list)
    has_attachment: bool = False
    before: date | None = None
    after: date | None = None

    def hint(self, template: str, **values: object) -> None:
        _append_new(self.hints, Hint.of(template, **values))

    def words(self, tokens: list[str], *, negated: bool) -> None:
        if not tokens:
            return
        if negated:
            _append_new(self.excluded, " ".join(tokens))
        elif len(tokens) == 1:
            _append_new(self.terms, tokens[0])
        else:
            # "jean-pierre", "alice@example.com", "report.pdf": adjacent tokens.
            _append_new(self.phrases, tuple(tokens))

    def build(self) -> Query:
        if self.excluded and not (self.terms or self.phrases or self.subject):
            self.hint("excluded words need at least one word to search for, ignored")
            self.excluded.clear()
        if self.before and self.after and self.after >= self.before:
            self.hint(
                "no date is both after:{after} and before:{before}",
                after=self.after,
                before=self.before,
            )
        return Query(
            terms=tuple(self.terms),
            phrases=tuple(self.phrases),
            excluded=tuple(self.excluded),
            subject=tuple(self.subject),
            from_=tuple(self.fields.get("from", ())),
            to=tuple(self.fields.get("to", ())),
            cc=tuple(self.fields.get("cc", ())),
            filenames=tuple(self.fields.get("filename", ())),
            has_attachment=self.has_attachment,
            before=self.before,
            after=self.after,
            spaces=tuple(self.fields.get("in", ())),
            is_flags=tuple(self.fields.get("is", ())),
            hints=tuple(self.hints),
        )


def _append_new(values: list[_T], value: _T) -> None:
    if value not in values:
        values.append(value)


def _read_quoted(text: str, i: int) -> tuple[str, int, bool]:
    """Read a quoted value starting at the quote at `i`: (value, next index, closed)."""
    for j in range(i + 1, len(text)):
        if text[j] in _CLOSE_QUOTES:
            return text[i + 1 : j], j + 1, True
    return text[i + 1 :], len(text), False


def _read_word(text: str, i: int) -> tuple[str, int]:
    match = _SPACE_RE.search(text, i)
    end = match.start() if match else len(text)
    return text[i:end], end


def parse_date(value: str) -> date | None:
    """`YYYY-MM-DD`, `YYYY-MM` or `YYYY` (also with `/` or `.`) → its first day; None if bad."""
    match = _DATE_RE.fullmatch(value.strip())
    if not match:
        return None
    year, month, day = (int(g) if g else 1 for g in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _apply_operator(b: _Builder, op: str, value: str, raw: str, negated: bool) -> None:
    value = _SPACE_RE.sub(" ", value).strip()
    if negated:
        b.hint('"-{op}:" cannot be negated, ignored', op=op)
    elif op in ("from", "to", "cc", "filename", "in", "is"):
        value = value.lower().strip("<>")
        if value:
            _append_new(b.fields.setdefault(op, []), value)
        else:
            b.hint('nothing after "{op}:", ignored', op=op)
    elif op == "subject":
        tokens = tokenize(value)
        if tokens:
            _append_new(b.subject, tuple(tokens))
        else:
            b.hint('nothing to search after "subject:", ignored')
    elif op == "has":
        if value.lower() in _ATTACHMENT_WORDS:
            b.has_attachment = True
        else:
            b.hint('unknown "has:{value}", ignored (try has:attachment)', value=value)
    else:  # before / after
        day = parse_date(value)
        if day is None:
            b.hint("bad date in {raw} (use YYYY-MM-DD), ignored", raw=raw)
        elif op == "before":
            b.before = day if b.before is None else min(b.before, day)
        else:
            b.after = day if b.after is None else max(b.after, day)


def parse_query(text: str) -> Query:
    """Parse search text. Never raises: what it cannot read becomes words and a hint.

    Words must all match (AND); `"a phrase"`; `-word` / `-"a phrase"` / `NOT word`
    exclude; operators (case-insensitive, values may be quoted): `from:` `to:`
    `cc:` `subject:` `filename:` `has:attachment` `before:` `after:` `in:` `is:`.
    Dates are `YYYY-MM-DD`, or `YYYY-MM` / `YYYY` meaning their first day.
    A word with inner punctuation ("jean-pierre", an address) is a phrase.
    """
    b = _Builder()
    if len(text) > _MAX_QUERY_CHARS:
        text = text[:_MAX_QUERY_CHARS]
        b.hint("query cut to its first {count} characters", count=_MAX_QUERY_CHARS)
    i, n = 0, len(text)
    negate_next = False
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        negated, negate_next = negate_next, False
        if text[i] == "-" and i + 1 < n and not text[i + 1].isspace():
            negated = True
            i += 1
        if text[i] in _OPEN_QUOTES:
            value, i, closed = _read_quoted(text, i)
            if not closed:
                b.hint("unclosed quote, searched to the end")
            b.words(tokenize(value), negated=negated)
            continue
        match = _OPERATOR_RE.match(text, i)
        name = match.group(1).lower() if match else ""
        if match and name in _OPERATORS:
            i = match.end()
            if i < n and text[i] in _OPEN_QUOTES:
                value, i, closed = _read_quoted(text, i)
                if not closed:
                    b.hint('unclosed quote after "{name}:", read to the end', name=name)
            else:
                value, i = _read_word(text, i)
            _apply_operator(b, name, value, text[match.start() : i], negated)
            continue
        word, i = _read_word(text, i)
        is_url = name in _URL_SCHEMES or word[len(name) + 1 :].startswith("//")
        if match and not is_url:
            b.hint('unknown operator "{operator}", searched as words', operator=match.group(0))
            for token in tokenize(word):
                b.words([token], negated=negated)
        elif word in ("OR", "AND", "NOT") and not negated:
            if word == "OR":
                b.hint("OR is not supported: all words must match")
            negate_next = word == "NOT"
        else:
            b.words(tokenize(word), negated=negated)
    return b.build()


# --------------------------------------------------------------------------- backends

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


def _fts5_string(tokens: Sequence[str]) -> str | None:
    tokens = _clean(tokens)
    return '"' + " ".join(tokens).replace('"', '""') + '"' if tokens else None


def fts5_match(query: Query, *, subject_column: str = "subject") -> str | None:
    """An SQLite FTS5 MATCH expression for the query's words; None when it has none.

    Every token is double-quoted, so no user input reaches FTS5's syntax.
    Words search every column of the table; `subject:` ones `subject_column`.
    Excluded words only narrow a search that has at least one positive word.
    """
    if not _COLUMN_RE.fullmatch(subject_column):
        raise ValueError(f"not a column name: {subject_column!r}")
    items = [_fts5_string([t]) for t in query.terms]
    items += [_fts5_string(p) for p in query.phrases]
    subject = (_fts5_string(p) for p in query.subject)
    items += [f"{{{subject_column}}} : {p}" for p in subject if p]
    positive = [item for item in items if item]
    if not positive:
        return None
    expression = " AND ".join(positive)
    excluded_items = [x for x in (_fts5_string(x.split(" ")) for x in query.excluded) if x]
    if excluded_items:
        excluded = " OR ".join(excluded_items)
        expression = f"({expression}) NOT ({excluded})"
    return expression


def tsquery_text(query: Query, *, subject_weight: str = "A") -> str | None:
    """PostgreSQL tsquery text for the query's words; None when it has none.

    Use it as `%s::tsquery`: lexemes are then taken verbatim, exactly as
    `tsvector_literal` stores them. `to_tsquery('simple', %s)` accepts it too
    but re-parses each word and drops some (², ①, private-use characters).
    `subject:` words must carry `subject_weight` in the tsvector.
    """
    if subject_weight not in ("A", "B", "C", "D"):
        raise ValueError(f"not a tsvector weight: {subject_weight!r}")

    def phrase(tokens: Sequence[str], weight: str = "") -> str | None:
        suffix = ":" + weight if weight else ""
        lexemes = [_pg_lexeme(t) + suffix for t in _clean(tokens)]
        if len(lexemes) < 2:
            return lexemes[0] if lexemes else None
        return "(" + " <-> ".join(lexemes) + ")"

    items = [phrase([t]) for t in query.terms]
    items += [phrase(p) for p in query.phrases]
    items += [phrase(p, subject_weight) for p in query.subject]
    positive = [item for item in items if item]
    if not positive:
        return None
    excluded = [phrase(x.split(" ")) for x in query.excluded]
    return " & ".join(positive + ["!" + item for item in excluded if item])


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
