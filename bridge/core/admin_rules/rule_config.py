"""Building `[[rules]]` and `[[spaces]]` from the parsed TOML, with one-line errors.

Pure: the TOML is already parsed; `path` is only used in error messages,
which name the file, the dotted key (`rules[3].match.subject`, counted from
0 like every list key) and the problem. Regexes are compiled here, once.
"""

from __future__ import annotations

import re
from typing import Any

from bridge.core.admin_rules.matchers import (
    AccountMatcher,
    CcMatcher,
    DomainMatcher,
    EnvelopeToMatcher,
    FlagMatcher,
    FromMatcher,
    HeaderMatcher,
    ListIdMatcher,
    Matcher,
    Patterns,
    SubjectMatcher,
    ToMatcher,
)
from bridge.core.admin_rules.rules import Rule, Space
from bridge.core.message import Flag
from bridge.errors import ConfigError

RULE_KEYS = ("name", "description", "match", "space", "tags", "private", "skip", "stop")
MATCH_KEYS = (
    "from",
    "to",
    "cc",
    "envelope_to",
    "domain",
    "list_id",
    "subject",
    "header",
    "regex",
    "account",
    "flag",
)
SPACE_KEYS = ("slug", "name", "members", "visibility", "digest", "address")
DIGEST_FREQUENCIES = ("off", "daily", "weekly")
VISIBILITIES = ("members", "staff")
# The flags a rule can match: those the parser sets, not the store's own
# (an id collision is found when the message is stored, after the rules ran).
FLAGS = tuple(sorted(v for k, v in vars(Flag).items() if k.isupper() and v != Flag.ID_COLLISION))
_SLUG = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_ADDRESS = re.compile(r"[^@\s<>(),;:\"]+@[a-z0-9-]+(\.[a-z0-9-]+)+")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,200}")  # RFC 5322 ftext
_ADDRESS_MATCHERS: dict[str, type[FromMatcher | ToMatcher | CcMatcher | EnvelopeToMatcher]] = {
    "from": FromMatcher,
    "to": ToMatcher,
    "cc": CcMatcher,
    "envelope_to": EnvelopeToMatcher,
}


class _Keys:
    """Error helper: the file and the dotted key prefix."""

    def __init__(self, path: str, prefix: str) -> None:
        self.path = path
        self.prefix = prefix

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"{self.prefix}.{key}" if key else self.prefix, problem)

    def table(self, value: Any, allowed: tuple[str, ...], key: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"has value {value!r}: expected a table")
        for name in value:
            if name not in allowed:
                raise self.error(f"{key}.{name}" if key else name, "unknown key")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"has value {value!r}: expected str")
        return value

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"has value {value!r}: expected true or false")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        """A string or a non-empty list of strings."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.error(key, f"has value {value!r}: expected a string or a list of strings")
        if not items or not all(v.strip() for v in items):
            raise self.error(key, "must not be empty")
        return tuple(v.strip() for v in items)

    def slug(self, value: Any, key: str) -> str:
        text = self.text(value, key)
        if not _SLUG.fullmatch(text):
            raise self.error(key, f"has value {text!r}: use a-z, 0-9, '.', '_', '-' (100 at most)")
        return text

    def addresses(self, value: Any, key: str) -> Patterns:
        items = self.strings(value, key)
        for item in items:
            _local, at, domain = item.partition("@")
            if not at or ("." not in domain and domain != "localhost") or " " in item:
                raise self.error(
                    key, f"has value {item!r}: expected an address or @domain (e.g. @example.com)"
                )
        return Patterns.of(items)

    def regex(self, value: Any, key: str) -> re.Pattern[str]:
        text = self.text(value, key)
        try:
            pattern = re.compile(text, re.IGNORECASE)
        except re.error as exc:
            raise self.error(key, f"bad regex {text!r}: {exc}") from None
        problem = catastrophic(text)
        if problem:
            raise self.error(key, f"bad regex {text!r}: {problem}")
        return pattern


def catastrophic(pattern: str) -> str | None:
    """Why `pattern` may backtrack for ever on a hostile subject, or None.

    Python's `re` has no time limit, so the obvious exponential shapes are
    refused: a group holding `+`, `*` or `{n,}` that is itself repeated
    (`(a+)+`, `(\\w+\\s?)*`, `(.*)*`). A scan, not a full analysis.
    """
    stack = [False]  # per open group: does it hold an unbounded quantifier?
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":  # a character class: skip to its closing bracket
            i += 1
            if i < len(pattern) and pattern[i] == "^":
                i += 1
            if i < len(pattern) and pattern[i] == "]":
                i += 1
            while i < len(pattern) and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif char == "(":
            stack.append(False)
        elif char == ")" and len(stack) > 1:
            inner = stack.pop()
            if inner and _unbounded(pattern, i + 1):
                return "a repeated group holds a repeat (such as (a+)+): it can take forever"
            stack[-1] = stack[-1] or inner
        elif _unbounded(pattern, i):
            stack[-1] = True
        i += 1
    return None


def _unbounded(pattern: str, i: int) -> bool:
    """A `+`, `*` or `{n,}` quantifier starts at `i`."""
    if i >= len(pattern):
        return False
    if pattern[i] in "+*":
        return True
    found = re.match(r"\{\d*,\}", pattern[i:])
    return found is not None


def parse_spaces(value: Any, path: str) -> tuple[Space, ...]:
    """The `[[spaces]]` array of tables."""
    if not isinstance(value, list):
        raise ConfigError(path, "spaces", "must be an array of tables ([[spaces]])")
    spaces: list[Space] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        keys = _Keys(path, f"spaces[{i}]")
        keys.table(item, SPACE_KEYS)
        if "slug" not in item:
            raise keys.error("slug", "is required")
        slug = keys.slug(item["slug"], "slug")
        if slug in seen:
            raise keys.error("slug", f"has value {slug!r}: used twice")
        seen.add(slug)
        name = keys.text(item.get("name", slug), "name").strip() or slug
        members = keys.addresses(item["members"], "members") if "members" in item else Patterns()
        visibility = keys.text(item.get("visibility", "members"), "visibility")
        if visibility not in VISIBILITIES:
            raise keys.error(
                "visibility", f"has value {visibility!r}: expected one of 'members', 'staff'"
            )
        if visibility == "members" and not (members.addresses or members.domains):
            raise keys.error("members", "is required when visibility is 'members'")
        digest = keys.text(item.get("digest", ""), "digest")
        if digest and digest not in DIGEST_FREQUENCIES:
            raise keys.error(
                "digest", f"has value {digest!r}: expected one of 'off', 'daily', 'weekly'"
            )
        address = keys.text(item.get("address", ""), "address").strip().lower()
        if address and not _ADDRESS.fullmatch(address):
            raise keys.error("address", f"has value {address!r}: expected an address")
        spaces.append(Space(slug, name, members, visibility, digest, address))
    return tuple(spaces)


def parse_rules(value: Any, spaces: tuple[Space, ...], path: str) -> tuple[Rule, ...]:
    """The `[[rules]]` array of tables, in order; a space must be declared in `[[spaces]]`."""
    if not isinstance(value, list):
        raise ConfigError(path, "rules", "must be an array of tables ([[rules]])")
    slugs = {space.slug for space in spaces}
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        keys = _Keys(path, f"rules[{i}]")
        keys.table(item, RULE_KEYS)
        if "name" not in item:
            raise keys.error("name", "is required")
        name = keys.slug(item["name"], "name")
        if name in seen:
            raise keys.error("name", f"has value {name!r}: used twice")
        seen.add(name)
        space = keys.slug(item["space"], "space") if "space" in item else None
        if space is not None and space not in slugs:
            raise keys.error("space", f"has value {space!r}: no such space in [[spaces]]")
        tags = _tags(keys, item["tags"]) if "tags" in item else ()
        skip = keys.flag(item.get("skip", False), "skip")
        if skip and (space or tags or item.get("private")):
            raise keys.error("skip", "a skipped message has no space, tags or privacy")
        rules.append(
            Rule(
                name=name,
                description=keys.text(item.get("description", ""), "description"),
                matchers=_matchers(keys, item.get("match", {})),
                space=space,
                tags=tags,
                private=keys.flag(item.get("private", False), "private"),
                skip=skip,
                stop=keys.flag(item.get("stop", False), "stop"),
            )
        )
    return tuple(rules)


def _tags(keys: _Keys, value: Any) -> tuple[str, ...]:
    tags = keys.strings(value, "tags")
    for tag in tags:
        if "," in tag or len(tag) > 100:
            raise keys.error("tags", f"has value {tag!r}: no commas, 100 characters at most")
    return tuple(dict.fromkeys(tags))


def _matchers(keys: _Keys, value: Any) -> tuple[Matcher, ...]:
    match = keys.table(value, MATCH_KEYS, "match")
    found: list[Matcher] = []
    for key in MATCH_KEYS:  # a fixed order, whatever order the file has
        if key not in match:
            continue
        dotted = f"match.{key}"
        raw = match[key]
        if key in _ADDRESS_MATCHERS:
            found.append(_ADDRESS_MATCHERS[key](keys.addresses(raw, dotted)))
        elif key == "domain":
            domains = tuple(d if d.startswith("@") else "@" + d for d in keys.strings(raw, dotted))
            found.append(DomainMatcher(keys.addresses(list(domains), dotted)))
        elif key == "list_id":
            ids = (v.strip("<>").lower() for v in keys.strings(raw, dotted))
            found.append(ListIdMatcher(frozenset(ids)))
        elif key == "subject":
            found.append(SubjectMatcher(keys.regex(raw, dotted)))
        elif key == "header":
            name = keys.text(raw, dotted)
            if not _HEADER_NAME.fullmatch(name):
                raise keys.error(dotted, f"has value {name!r}: not a header name")
            regex = keys.regex(match["regex"], "match.regex") if "regex" in match else None
            found.append(HeaderMatcher(name, regex))
        elif key == "regex" and "header" not in match:
            raise keys.error(dotted, "needs match.header (the header to search)")
        elif key == "account":
            found.append(AccountMatcher(frozenset(v.lower() for v in keys.strings(raw, dotted))))
        elif key == "flag":
            flags = keys.strings(raw, dotted)
            for flag in flags:
                if flag not in FLAGS:
                    raise keys.error(
                        dotted, f"has value {flag!r}: expected one of {', '.join(FLAGS)}"
                    )
            found.append(FlagMatcher(frozenset(flags)))
    return tuple(found)
