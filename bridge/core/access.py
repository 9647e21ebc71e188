"""Who may see what: the one access rule for the web viewer, search, digests and exports.

Per message, never per thread. A person may see a message when

- a copy of it was delivered to them: an envelope recipient over SMTP/LMTP,
  an owner of the IMAP account it was read from, the owner of the archive
  it was imported from (`holders`);
- or its own From, To or Cc names them (`named`; Bcc grants nothing by
  itself: a Bcc recipient sees the copy delivered to them);
- or it is in a space they may read and it is not private.

Nothing else grants sight: not another message of the same thread, not a
References header naming a known id, not having started the thread. A
thread shows each reader the messages they may see of it and nothing of
the rest; with none, it answers exactly like a missing one (404).

"Staff" is anyone whose address is in one of the company's domains (the
domains are given, not read from anywhere): a domain covers its subdomains,
so `enron.com` makes `a@ect.enron.com` staff. Spaces with visibility "staff"
are open to every member of staff; spaces with visibility "members" to their
members only. A member of a "staff" space who is not staff still reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bridge.core.admin_rules.rules import Space


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in person: their address (lower case), staff or not, spaces they may read."""

    address: str
    is_staff: bool
    spaces: frozenset[str]


def normalize_address(address: str) -> str:
    return address.strip().lower()


def is_staff(address: str, staff_domains: Iterable[str]) -> bool:
    """True when the address's domain is, or is under, one of `staff_domains`."""
    _, at, domain = normalize_address(address).rpartition("@")
    if not at or not domain:
        return False
    for staff in staff_domains:
        staff = staff.strip().lower().lstrip("@").rstrip(".")
        if staff and (domain == staff or domain.endswith("." + staff)):
            return True
    return False


def viewer_for(address: str, spaces: Iterable[Space], staff_domains: Iterable[str]) -> Viewer:
    """The Viewer for `address` under the configured spaces and company domains."""
    address = normalize_address(address)
    staff = is_staff(address, staff_domains)
    readable = frozenset(
        space.slug
        for space in spaces
        if space.is_member(address) or (staff and space.visibility == "staff")
    )
    return Viewer(address, staff, readable)


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the rule reads of one message: lower-case addresses, its space and privacy."""

    holders: frozenset[str]  # a copy was delivered to them
    named: frozenset[str]  # From, To, Cc
    space: str | None
    private: bool


# Why a person may see a message, as `grants` names it.
DELIVERED, NAMED, SPACE = "delivered", "named", "space"


def grants(viewer: Viewer, facts: MessageFacts) -> tuple[str, ...]:
    """Every reason the rule gives `viewer` to see the message; () when it is hidden."""
    found: list[str] = []
    if viewer.address and viewer.address in facts.holders:
        found.append(DELIVERED)
    if viewer.address and viewer.address in facts.named:
        found.append(NAMED)
    if not facts.private and facts.space is not None and facts.space in viewer.spaces:
        found.append(SPACE)
    return tuple(found)


def may_see(viewer: Viewer, facts: MessageFacts) -> bool:
    """The rule itself (see the module docstring)."""
    return bool(grants(viewer, facts))
