"""Who may see what: the one access rule for the web viewer, digests and exports.

A person sees a thread when they were party to it (they received one of its
messages from someone else, in To, Cc or Bcc or as an envelope recipient of a
delivery, or they started it), or when it is in a space they may read,
unless the thread is private: a private thread is seen by its participants
only. Someone who only wrote into a thread sees their own messages in it and
nothing more, so a reply naming a known Message-ID grants no sight. A hidden
thread must answer exactly like a missing one (404), so callers never learn
that it exists.

"Staff" is anyone whose address is in one of the company's domains (the
domains are given, not read from anywhere): a domain covers its subdomains,
so `enron.com` makes `a@ect.enron.com` staff. Spaces with visibility "staff"
are open to every member of staff; spaces with visibility "members" to their
members only. A member of a "staff" space who is not staff still reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bridge.core.rules import Space


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


def may_see_thread(
    viewer: Viewer, participants: set[str], space: str | None, private: bool
) -> bool:
    """The rule itself; `participants` are lower-case addresses of every party to the thread."""
    if viewer.address and viewer.address in participants:
        return True
    if private:
        return False
    return space is not None and space in viewer.spaces


def may_see_message(
    viewer: Viewer,
    parties: set[str],
    message_space: str | None,
    message_private: bool,
    thread_space: str | None,
    thread_private: bool,
    thread_party: bool = True,
) -> bool:
    """Whether a message of a thread the viewer may see is shown to them.

    In a private thread only the messages the viewer was party to are shown.
    In an open thread a message that a rule put in another space, one the
    viewer may not read, stays hidden: merging by References must not carry
    a message across a space's line. `thread_party` is False when the viewer
    only wrote into the thread (received none of it, started none of it) and
    does not read its space: then they see only their own part of it, so
    naming a known Message-ID in References grants no sight.
    """
    if viewer.address and viewer.address in parties:
        return True
    if thread_private or message_private:
        return False
    if not thread_party and (thread_space is None or thread_space not in viewer.spaces):
        return False
    return message_space is None or message_space == thread_space or message_space in viewer.spaces
