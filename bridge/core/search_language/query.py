"""The search language: query text → `Query`, a backend-neutral value.

Words, phrases and prefixes are folded tokens (core/search_language/tokens.py), so both
backends match the same messages; core/search_language/syntax.py writes a `Query` in
each backend's syntax. Reading never fails: what cannot be read becomes words
and a `Hint`. OR binds tighter than the implicit AND, as in Gmail:
`a OR b c` is `(a OR b) AND c`; parentheses group, one level deep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from bridge.core.search_language.model import AllOf, AnyOf, Hint, Match, Node, Query
from bridge.core.search_language.tokens import TOKEN_RE, fold, token_spans, tokenize

__all__ = [
    "TOKEN_RE",
    "AllOf",
    "AnyOf",
    "Hint",
    "Match",
    "Node",
    "Query",
    "fold",
    "parse_date",
    "parse_query",
    "token_spans",
    "tokenize",
]

_T = TypeVar("_T")

_MAX_QUERY_CHARS = 1000
# A shorter prefix ("co*") expands to thousands of words: slow on both
# engines and useless to read, so it is searched as a whole word.
MIN_PREFIX_CHARS = 3
# Control characters mean nothing in a search, and PostgreSQL refuses a NUL
# in any text parameter (an operator's LIKE pattern, say): they are spaces.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FILTERS = frozenset({"from", "to", "cc", "filename", "has", "before", "after", "in", "is", "tag"})
_OPERATORS = _FILTERS | {"subject"}
_URL_SCHEMES = frozenset({"mailto", "tel", "sip", "urn"})
_ATTACHMENT_WORDS = frozenset({"attachment", "attachments", "attach", "file", "files"})
_OPEN_QUOTES = '"“„«'
_CLOSE_QUOTES = '"”“»'
_OPERATOR_RE = re.compile(r"([A-Za-z][A-Za-z_-]*):")
_DATE_RE = re.compile(r"(\d{4})(?:[-/.](\d{1,2})(?:[-/.](\d{1,2}))?)?")
_SPACE_RE = re.compile(r"\s+")
_WORD_END_RE = re.compile(r"\s")
_GROUP_WORD_END_RE = re.compile(r"[\s)]")
_OR_FILTER = 'OR joins words and phrases: "{raw}" applies to every result'
_OR_EXCLUDED = "OR cannot join an excluded word: it is excluded from every result"


@dataclass(slots=True)
class _Builder:
    """Mutable scratch for one parse_query call; frozen into a Query at the end."""

    terms: list[str] = field(default_factory=list)
    phrases: list[tuple[str, ...]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    subject: list[tuple[str, ...]] = field(default_factory=list)
    groups: list[Node] = field(default_factory=list)
    excluded_groups: list[Node] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    hints: list[Hint] = field(default_factory=list)
    has_attachment: bool = False
    before: date | None = None
    after: date | None = None

    def hint(self, template: str, **values: object) -> None:
        _append_new(self.hints, Hint.of(template, **values))

    def add(self, node: Node, *, negated: bool) -> None:
        """Require `node` (or, `negated`, exclude it) alongside everything else."""
        if isinstance(node, AllOf) and not negated:
            for item in node.items:
                self.add(item, negated=False)
            for item in node.without:
                self.add(item, negated=True)
        elif isinstance(node, AnyOf) and negated:
            for option in node.options:  # not (a or b): neither a nor b
                self.add(option, negated=True)
        elif not isinstance(node, Match) or node.prefix or (negated and node.subject):
            _append_new(self.excluded_groups if negated else self.groups, node)
        elif negated:
            _append_new(self.excluded, " ".join(node.tokens))
        elif node.subject:
            _append_new(self.subject, node.tokens)
        elif len(node.tokens) == 1:
            _append_new(self.terms, node.tokens[0])
        else:
            # "jean-pierre", "alice@example.com", "report.pdf": adjacent tokens.
            _append_new(self.phrases, node.tokens)

    def build(self) -> Query:
        narrowed = (
            self.terms
            or self.phrases
            or self.subject
            or self.groups
            or self.fields
            or self.has_attachment
            or self.before
            or self.after
        )
        if (self.excluded or self.excluded_groups) and not narrowed:
            self.hint("excluded words need something else to search for, ignored")
            self.excluded.clear()
            self.excluded_groups.clear()
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
            tags=tuple(self.fields.get("tag", ())),
            hints=tuple(self.hints),
            groups=tuple(self.groups),
            excluded_groups=tuple(self.excluded_groups),
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


def _read_word(text: str, i: int, in_group: bool) -> tuple[str, int]:
    """The word at `i`: up to a space, or to a `)` inside parentheses."""
    match = (_GROUP_WORD_END_RE if in_group else _WORD_END_RE).search(text, i)
    end = match.start() if match else len(text)
    return text[i:end], end


def _read_stars(text: str, i: int) -> tuple[bool, int]:
    """Whether a prefix star follows a closing quote at `i`, and the index after it."""
    end = i
    while end < len(text) and text[end] == "*":
        end += 1
    return end > i, end


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


def _apply_filter(b: _Builder, op: str, value: str, raw: str, negated: bool) -> None:
    value = _SPACE_RE.sub(" ", value).strip()
    if negated:
        b.hint('"-{op}:" cannot be negated, ignored', op=op)
    elif op in ("from", "to", "cc", "filename", "in", "is", "tag"):
        value = value.lower().strip("<>")
        if value:
            _append_new(b.fields.setdefault(op, []), value)
        else:
            b.hint('nothing after "{op}:", ignored', op=op)
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


def _match(
    b: _Builder, text: str, raw: str, *, subject: bool = False, prefix: bool = False
) -> Match | None:
    """`text` as words to match; a prefix too short to search is searched as a word."""
    tokens = tokenize(text)
    if not tokens:
        return None
    if prefix and len(tokens[-1]) < MIN_PREFIX_CHARS:
        b.hint(
            '"{word}": a prefix needs at least {count} letters before "*" '
            "(shorter ones match too many words), searched as a word",
            word=raw.lstrip("-"),
            count=MIN_PREFIX_CHARS,
        )
        prefix = False
    return Match(tuple(tokens), subject=subject, prefix=prefix)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class _Item:
    """One piece of query text: "atom" (words to match), "filter" (an operator,
    already applied), "open" / "close" (a parenthesis), "or"; _conjunction
    also notes a whole group read as "group"."""

    kind: str
    negated: bool = False
    node: Node | None = None
    raw: str = ""


def _lex(text: str, b: _Builder) -> list[_Item]:
    """Query text → items; operators are applied to `b` as they are read."""
    items: list[_Item] = []
    i, n = 0, len(text)
    depth = 0
    negate_next = False
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        negated, negate_next = negate_next, False
        if text[i] == "-" and i + 1 < n and not text[i + 1].isspace():
            negated = True
            i += 1
        if text[i] in "()":
            opening = text[i] == "("
            i += 1
            if opening:
                depth += 1
                if depth == 1:
                    items.append(_Item("open", negated))
                else:
                    b.hint("parentheses inside parentheses are read as one level")
            elif depth == 0:
                b.hint('")" without "(", ignored')
            else:
                depth -= 1
                if depth == 0:
                    items.append(_Item("close"))
            continue
        in_group = depth > 0
        if text[i] in _OPEN_QUOTES:
            value, i, closed = _read_quoted(text, i)
            if not closed:
                b.hint("unclosed quote, searched to the end")
            prefix, i = _read_stars(text, i)
            node = _match(b, value, text[start:i], prefix=prefix)
            if node is not None:
                items.append(_Item("atom", negated, node, text[start:i]))
            continue
        match = _OPERATOR_RE.match(text, i)
        name = match.group(1).lower() if match else ""
        if match and name in _OPERATORS:
            i = match.end()
            prefix = False
            if i < n and text[i] in _OPEN_QUOTES:
                value, i, closed = _read_quoted(text, i)
                if not closed:
                    b.hint('unclosed quote after "{name}:", read to the end', name=name)
                prefix, i = _read_stars(text, i)
            else:
                value, i = _read_word(text, i, in_group)
                prefix = value.endswith("*")
            raw = text[start:i]
            if name in _FILTERS:
                _apply_filter(b, name, value, raw, negated)
                items.append(_Item("filter", raw=raw))
                continue
            node = _match(b, value, raw, subject=True, prefix=prefix)
            if node is None:
                b.hint('nothing to search after "subject:", ignored')
            else:
                items.append(_Item("atom", negated, node, raw))
            continue
        word, i = _read_word(text, i, in_group)
        if not in_group and word.endswith(")") and "(" not in word:
            b.hint('")" without "(", ignored')
        is_url = name in _URL_SCHEMES or word[len(name) + 1 :].startswith("//")
        if match and not is_url:
            b.hint('unknown operator "{operator}", searched as words', operator=match.group(0))
            for token in tokenize(word):
                items.append(_Item("atom", negated, Match((token,)), token))
        elif word in ("OR", "AND", "NOT") and not negated:
            if word == "OR":
                items.append(_Item("or"))
            negate_next = word == "NOT"
        else:
            node = _match(b, word, text[start:i], prefix=word.endswith("*"))
            if node is not None:
                items.append(_Item("atom", negated, node, text[start:i]))
    if depth:
        b.hint('unclosed "(", read to the end')
    return items


def _conjunction(items: list[_Item | list[_Item]], b: _Builder) -> list[tuple[bool, Node]]:
    """Items and groups (lists of items) → (negated, node) pairs that must all hold.

    OR joins the positive words, phrases and groups on its two sides; it
    cannot join an operator or an exclusion, which apply to every result.
    """
    out: list[tuple[bool, Node]] = []
    chain: list[Node] = []
    pending = False  # an OR waits for its right-hand side
    previous: _Item | None = None  # the last item read ("group" for a group)

    def close_chain() -> None:
        if len(chain) > 1:
            out.append((False, AnyOf(tuple(chain))))
        elif chain:
            out.append((False, chain[0]))
        chain.clear()

    for entry in items:
        if isinstance(entry, _Item) and entry.kind == "or":
            if previous is not None and previous.kind == "filter":
                b.hint(_OR_FILTER, raw=previous.raw)
            elif previous is not None and previous.negated:
                b.hint(_OR_EXCLUDED)
            elif pending or not chain:
                b.hint("OR needs a word on each side, ignored")
            else:
                pending = True
            previous = entry
            continue
        if isinstance(entry, list):
            negated, node = _group(entry, b)
            if isinstance(node, AllOf) and not node.items:
                # Only exclusions inside: they exclude from every result.
                negated, node = True, AnyOf(node.without)
            previous = _Item("group", negated)
        elif entry.kind == "filter":
            if pending:
                b.hint(_OR_FILTER, raw=entry.raw)
                pending = False
            previous = entry
            continue
        else:
            negated, node = entry.negated, entry.node
            previous = entry
        if node is None:
            pending = False
        elif negated:
            if pending:
                b.hint(_OR_EXCLUDED)
                pending = False
            out.append((True, node))
        elif pending:
            chain.append(node)
            pending = False
        else:
            close_chain()
            chain.append(node)
    if pending:
        b.hint("OR needs a word on each side, ignored")
    close_chain()
    return out


def _group(items: list[_Item], b: _Builder) -> tuple[bool, Node | None]:
    """A group in parentheses (its first item is the opening one) → (negated, node)."""
    negated = items[0].negated
    inner = _conjunction(list(items[1:]), b)
    positive = tuple(node for excluded, node in inner if not excluded)
    without = tuple(node for excluded, node in inner if excluded)
    if not positive:
        if without:
            if negated:
                b.hint("excluded words need something else to search for, ignored")
                return negated, None
            return negated, AllOf((), without)  # exclusions, see _conjunction
        return negated, None
    if len(positive) == 1 and not without:
        return negated, positive[0]
    return negated, AllOf(positive, without)


def parse_query(text: str) -> Query:
    """Parse search text. Never raises: what it cannot read becomes words and a hint.

    Words must all match (AND); `"a phrase"`; `a OR b` (binding tighter than
    AND: `a OR b c` is `(a OR b) c`); `(...)` groups, one level deep;
    `contra*` matches words starting with "contra" (3 letters at least);
    `-word` / `-"a phrase"` / `-(a OR b)` / `NOT word` exclude, when anything
    else narrows the search; operators (case-insensitive, values may be
    quoted): `from:` `to:` `cc:` `subject:` `filename:` `has:attachment`
    `before:` `after:` `in:` `is:` `tag:`. Dates are `YYYY-MM-DD`, or `YYYY-MM` /
    `YYYY` meaning their first day. A word with inner punctuation
    ("jean-pierre", an address) is a phrase.
    """
    b = _Builder()
    text = _CONTROL_RE.sub(" ", text)
    if len(text) > _MAX_QUERY_CHARS:
        text = text[:_MAX_QUERY_CHARS]
        b.hint("query cut to its first {count} characters", count=_MAX_QUERY_CHARS)
    entries: list[_Item | list[_Item]] = []
    group: list[_Item] | None = None
    for item in _lex(text, b):
        if item.kind == "open":
            group = [item]
            entries.append(group)
        elif item.kind == "close":
            group = None
        elif group is not None:
            group.append(item)
        else:
            entries.append(item)
    for negated, node in _conjunction(entries, b):
        b.add(node, negated=negated)
    return b.build()
