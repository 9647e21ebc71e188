"""Reading single header fields: dates, Outlook Thread-Index, address lists.

Pure helpers of `core.parse`; each takes a decoded header value and returns
clean values, flagging what it had to guess.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from email.errors import HeaderParseError
from email.utils import parsedate_tz

from mailparser.utils import get_addresses

from bridge.core.message import Address
from bridge.core.normalize import clean_text, decode_header_value, strip_comments


def parse_date(raw: str | None) -> tuple[datetime | None, datetime | None]:
    """(UTC date, wall-clock time as written), both None when unusable.

    The stdlib's `parsedate_tz` is used rather than mail-parser's strict
    RFC 5322 reader: old mail (1997 R lists, Enron) has asctime-style and
    sloppy dates that the strict reader refuses.
    """
    if not raw:
        return None, None
    try:
        parts = parsedate_tz(raw[:200])
        if parts is None:
            return None, None
        year, month, day, hour, minute, second = parts[:6]
        if not 1971 <= year <= 2100:
            return None, None
        local = datetime(year, month, day, hour, minute, min(second, 59))
        offset = parts[9] or 0
        if abs(offset) > 15 * 3600:  # no such zone: take the time as UTC
            offset = 0
        return (local - timedelta(seconds=offset)).replace(tzinfo=UTC), local
    except (ValueError, OverflowError, TypeError, IndexError):
        return None, None


def parse_thread_index(raw: str | None) -> bytes | None:
    """The decoded Outlook Thread-Index, or None (22 bytes at least)."""
    if not raw:
        return None
    try:
        value = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return value if len(value) >= 22 else None


# A lenient addr-spec: Enron writes "d..baughman@enron.com" and
# "<.adam@enron.com>", invalid dot-atoms but unambiguous.
_LOOSE_ADDR = r"[^\s<>()\[\]@,;:\"\\]+@[^\s<>()\[\]@,;:\"\\]+"
# One item of a plain list, matched on the stripped item. Every class
# excludes the delimiter that follows it, so matching is linear: no nested or
# overlapping quantifiers for a hostile header to make backtrack.
_SIMPLE_ITEM = re.compile(rf"([^\"<>()\[\],;:@\\=]*)<({_LOOSE_ADDR})>|({_LOOSE_ADDR})")
_LOOSE_ITEM = re.compile(rf"([^\"<>()\[\],;:@\\]*)<({_LOOSE_ADDR})>|({_LOOSE_ADDR})")
_LOOSE_SEARCH = re.compile(_LOOSE_ADDR)


def _simple_addresses(text: str) -> tuple[Address, ...] | None:
    """Plain `a@x, Name <b@y>` lists (most company mail), read by one regex per item.

    Such values hold no quotes, comments, groups or encoded words, so they
    are unambiguous by construction; mail-parser's structural scanner costs
    ~0.1 ms per address and is kept for everything else.
    """
    found = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        match = _SIMPLE_ITEM.fullmatch(item)
        if match is None:
            return None
        address = match.group(2) or match.group(3)
        found.append(Address(name=(match.group(1) or "").strip(), address=address.lower()))
    return tuple(found)


def address_list(text: str) -> tuple[tuple[Address, ...], list[str]]:
    """Addresses of one header value, and the problems found.

    mail-parser splits only at structural delimiters and reports items it
    could not read unambiguously; their candidates come back flagged, and
    items with no candidate get the stdlib's best guess, flagged too.
    """
    simple = _simple_addresses(text)
    if simple is not None:
        return simple, []
    diagnostics: list[dict[str, object]] = []
    try:
        pairs = get_addresses(text, defects=diagnostics, decode_names=True)
    except HeaderParseError:
        # A broken encoded word in a display name (bad base64): read the
        # addresses with the names left encoded, and say so.
        diagnostics = []
        pairs = get_addresses(text, defects=diagnostics, decode_names=False)
        diagnostics.append({"reason": "undecodable-name", "recovered": True})
    found = [
        Address(name=clean_text(name), address=clean_text(addr).lower())
        for name, addr in pairs
        if addr
    ]
    problems: list[str] = []
    for diag in diagnostics:
        raw = str(diag.get("raw", ""))
        if diag.get("recovered"):
            problems.append(str(diag.get("reason", "address")))
            found = [
                Address(a.name, a.address, True)
                if any(a.address == str(c.get("address", "")).lower() for c in _candidates(diag))
                else a
                for a in found
            ]
            continue
        loose = _LOOSE_ITEM.fullmatch(raw.strip())
        if loose:  # invalid dot-atom, yet only one way to read it
            name = decode_header_value((loose.group(1) or "").strip())
            found.append(Address(name, (loose.group(2) or loose.group(3)).lower()))
            continue
        problems.append(str(diag.get("reason", "address")))
        guesses = [
            (str(c.get("display_name", "")), str(c.get("address", ""))) for c in _candidates(diag)
        ]
        if not guesses:
            # Not the stdlib's parseaddr: it recurses on nested comments.
            bare = _LOOSE_SEARCH.search(strip_comments(raw))
            guesses = [("", bare.group(0))] if bare else []
        found.extend(
            Address(decode_header_value(name), clean_text(addr).lower(), True)
            for name, addr in guesses
            if "@" in addr
        )
    return tuple(found), problems


def _candidates(diag: dict[str, object]) -> list[dict[str, object]]:
    value = diag.get("candidates")
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []
