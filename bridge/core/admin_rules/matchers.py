"""The matchers a rule is made of: one small named class per `[rules.match]` key.

Each has a `key` (its config name), a `description` and one `match(facts)`
returning what matched (for people) or None; `explain(facts)` says what it
looked at either way, for `bridge rules test`.

Addresses and domains are compared lower-cased. An address pattern is a
whole address (`alice@example.com`) or `@example.com`, which covers the
domain and its subdomains (`@example.com` matches `bob@mail.example.com`).
Regexes are Python `re`, searched anywhere in the text (anchor with `^…$`),
case-insensitive (as Mailman's header matches; `(?-i:…)` to opt out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from bridge.core.message import ParsedMessage, Provenance

# Regexes see at most this much of a subject or header value, so a huge
# header costs bounded time whatever the pattern.
MATCH_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Patterns:
    """Whole addresses and `@domain` entries, for addresses and space members."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def of(cls, values: tuple[str, ...]) -> Patterns:
        clean = [v.strip().lower() for v in values]
        return cls(
            frozenset(v for v in clean if not v.startswith("@")),
            frozenset(v[1:] for v in clean if v.startswith("@")),
        )

    def matches(self, address: str) -> bool:
        if address in self.addresses:
            return True
        return bool(self.domains) and domain_in(address.rpartition("@")[2], self.domains)

    def __str__(self) -> str:
        return ", ".join(sorted(self.addresses) + sorted("@" + d for d in self.domains))


def domain_in(domain: str, domains: frozenset[str]) -> bool:
    """`domain` is one of `domains` or a subdomain of one (label by label, no regex)."""
    while domain:
        if domain in domains:
            return True
        domain = domain.partition(".")[2]
    return False


@dataclass(frozen=True, slots=True)
class Facts:
    """What the matchers look at, computed once per copy of a message."""

    parsed: ParsedMessage
    provenance: Provenance
    sender: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    envelope_to: tuple[str, ...]
    participants: tuple[str, ...]

    @classmethod
    def of(cls, parsed: ParsedMessage, provenance: Provenance) -> Facts:
        sender = (parsed.sender.address,) if parsed.sender and parsed.sender.address else ()
        to = tuple(a.address for a in parsed.to if a.address)
        cc = tuple(a.address for a in parsed.cc if a.address)
        bcc = tuple(a.address for a in parsed.bcc if a.address)
        envelope = tuple(a.strip().lower() for a in provenance.envelope_to if a.strip())
        everyone = tuple(dict.fromkeys(sender + to + cc + bcc + envelope))
        return cls(parsed, provenance, sender, to, cc, envelope, everyone)


class Matcher:
    """Base of every matcher: `match` returns what matched, or None."""

    key: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def match(self, facts: Facts) -> str | None:
        raise NotImplementedError

    def seen(self, facts: Facts) -> str:
        """What this matcher looked at, for people."""
        raise NotImplementedError

    def explain(self, facts: Facts) -> str:
        found = self.match(facts)
        if found is not None:
            return f"{self.key}: yes ({found})"
        return f"{self.key}: no ({self.seen(facts)})"


def _listed(values: tuple[str, ...]) -> str:
    if not values:
        return "none"
    shown = ", ".join(values[:5])
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")


@dataclass(frozen=True, slots=True)
class AddressMatcher(Matcher):
    patterns: Patterns

    def addresses(self, facts: Facts) -> tuple[str, ...]:
        raise NotImplementedError

    def match(self, facts: Facts) -> str | None:
        for address in self.addresses(facts):
            if self.patterns.matches(address):
                return address
        return None

    def seen(self, facts: Facts) -> str:
        return f"{_listed(self.addresses(facts))}; wanted {self.patterns}"


class FromMatcher(AddressMatcher):
    __slots__ = ()
    key = "from"
    description = "the From address"

    def addresses(self, facts: Facts) -> tuple[str, ...]:
        return facts.sender


class ToMatcher(AddressMatcher):
    __slots__ = ()
    key = "to"
    description = "any To address"

    def addresses(self, facts: Facts) -> tuple[str, ...]:
        return facts.to


class CcMatcher(AddressMatcher):
    __slots__ = ()
    key = "cc"
    description = "any Cc address"

    def addresses(self, facts: Facts) -> tuple[str, ...]:
        return facts.cc


class EnvelopeToMatcher(AddressMatcher):
    __slots__ = ()
    key = "envelope_to"
    description = "any envelope recipient (SMTP/LMTP RCPT TO, IMAP or import owners)"

    def addresses(self, facts: Facts) -> tuple[str, ...]:
        return facts.envelope_to


class DomainMatcher(AddressMatcher):
    __slots__ = ()
    key = "domain"
    description = "the domain of the sender or of any recipient (To, Cc, Bcc, envelope)"

    def addresses(self, facts: Facts) -> tuple[str, ...]:
        return facts.participants


@dataclass(frozen=True, slots=True)
class ListIdMatcher(Matcher):
    key = "list_id"
    description = "the List-Id (the part in angle brackets, e.g. devel.lists.example.org)"
    ids: frozenset[str]

    def match(self, facts: Facts) -> str | None:
        list_id = (facts.parsed.list_id or "").lower()
        return list_id if list_id and list_id in self.ids else None

    def seen(self, facts: Facts) -> str:
        return f"List-Id {facts.parsed.list_id or 'none'}; wanted {', '.join(sorted(self.ids))}"


def _search(pattern: re.Pattern[str], values: list[str]) -> str | None:
    for value in values:
        found = pattern.search(value[:MATCH_CHARS])
        if found is not None:
            return repr(found.group(0)[:80])
    return None


def _shorten(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


@dataclass(frozen=True, slots=True)
class SubjectMatcher(Matcher):
    key = "subject"
    description = "a regex searched in the Subject"
    pattern: re.Pattern[str]

    def match(self, facts: Facts) -> str | None:
        return _search(self.pattern, [facts.parsed.subject])

    def seen(self, facts: Facts) -> str:
        return f"subject {_shorten(facts.parsed.subject)}; regex {self.pattern.pattern!r}"


@dataclass(frozen=True, slots=True)
class HeaderMatcher(Matcher):
    """A regex searched in every value of one header; without a regex, the header is present."""

    key = "header"
    description = "any value of a header matches a regex (or the header is present)"
    name: str
    pattern: re.Pattern[str] | None = field(default=None)

    def match(self, facts: Facts) -> str | None:
        values = facts.parsed.header_values(self.name)
        if self.pattern is None:
            return f"{self.name} present" if values else None
        found = _search(self.pattern, values)
        return f"{self.name}: {found}" if found is not None else None

    def seen(self, facts: Facts) -> str:
        values = facts.parsed.header_values(self.name)
        shown = _shorten(values[0]) if values else "absent"
        wanted = f"regex {self.pattern.pattern!r}" if self.pattern else "present"
        return f"{self.name} {shown}; wanted {wanted}"


def account_names(provenance: Provenance) -> tuple[str, ...]:
    """The names a source account is known by: its kind, its location and the account part.

    An IMAP copy with location "sales/INBOX" answers to "imap", "sales/INBOX"
    and "sales"; an SMTP copy to "smtp" and its listener's name.
    """
    location = provenance.location
    names = [provenance.source, location, location.partition("/")[0]]
    return tuple(dict.fromkeys(n.lower() for n in names if n))


@dataclass(frozen=True, slots=True)
class AccountMatcher(Matcher):
    key = "account"
    description = 'the source: "imap", "smtp", "lmtp", "file", an IMAP account or account/folder'
    names: frozenset[str]

    def match(self, facts: Facts) -> str | None:
        for name in account_names(facts.provenance):
            if name in self.names:
                return name
        return None

    def seen(self, facts: Facts) -> str:
        wanted = ", ".join(sorted(self.names))
        return f"source {_listed(account_names(facts.provenance))}; wanted {wanted}"


@dataclass(frozen=True, slots=True)
class FlagMatcher(Matcher):
    key = "flag"
    description = 'a parser flag such as "auto-reply" or "bounce"'
    flags: frozenset[str]

    def match(self, facts: Facts) -> str | None:
        found = sorted(self.flags & facts.parsed.flags)
        return ", ".join(found) if found else None

    def seen(self, facts: Facts) -> str:
        has = ", ".join(sorted(facts.parsed.flags)) or "none"
        return f"flags {has}; wanted {', '.join(sorted(self.flags))}"
