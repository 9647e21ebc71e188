"""The values of the search language: a parsed `Query`, its word groups, and hints.

core/search_language/query.py reads query text into these; core/search_language/syntax.py writes
them
in each backend's syntax.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TypeAlias


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
class Match:
    """Folded tokens standing together (one token: a word), anywhere or, with
    `subject`, in the subject only; with `prefix`, the last token may be the
    start of a longer word (`contra*`)."""

    tokens: tuple[str, ...]
    subject: bool = False
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one of `options` (`a OR b`)."""

    options: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    """Every one of `items` and none of `without` (a group in parentheses)."""

    items: tuple[Node, ...]
    without: tuple[Node, ...] = ()


Node: TypeAlias = Match | AnyOf | AllOf


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed search. All text is folded; `excluded` entries are single
    tokens or space-joined token sequences (an excluded phrase).

    Plain words go to `terms`, `phrases` and `subject`; OR, prefixes and
    groups in parentheses to `groups` (each must match) and `excluded_groups`
    (none may match).
    """

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
    tags: tuple[str, ...] = ()  # rule tags (`tag:NAME`), lower case
    hints: tuple[Hint, ...] = ()
    groups: tuple[Node, ...] = ()
    excluded_groups: tuple[Node, ...] = ()

    def is_empty(self) -> bool:
        """True when the query asks for nothing (hints alone do not count)."""
        return not (
            self.terms
            or self.phrases
            or self.excluded
            or self.subject
            or self.groups
            or self.excluded_groups
            or self.from_
            or self.to
            or self.cc
            or self.filenames
            or self.has_attachment
            or self.before
            or self.after
            or self.spaces
            or self.is_flags
            or self.tags
        )

    def leaves(self) -> Iterator[Match]:
        """Every word, phrase and prefix that can make a message match, in
        query order (excluded ones are not)."""
        yield from (Match((term,)) for term in self.terms)
        yield from (Match(phrase) for phrase in self.phrases)
        yield from (Match(phrase, subject=True) for phrase in self.subject)
        stack: list[Node] = list(reversed(self.groups))
        while stack:
            node = stack.pop()
            if isinstance(node, Match):
                yield node
            else:
                stack.extend(reversed(node.options if isinstance(node, AnyOf) else node.items))
