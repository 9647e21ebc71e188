"""Text cut to fit the columns and indexes it is stored in, the same on every backend.

PostgreSQL refuses a value longer than its `varchar(n)` and a btree index
entry over about 2.7 KB, where SQLite takes both: without these bounds a
message stored on SQLite would fail on PostgreSQL (after its 250). Values are
cut here, before either store sees them. A cut value ends with `~` and a hash
of the whole, so two long values that share a prefix stay apart, and the same
value is always cut the same way.
"""

from __future__ import annotations

import hashlib

from bridge.core.message import Address
from bridge.core.normalize import normalize_subject

ADDRESS = 320  # people.address: RFC 5321 allows 256; anything longer is cut
LIST_ID = 255
CONTENT_TYPE = 255
CONTENT_ID = 998
# subject_norm sits in a btree index: 500 characters are at most 2,000 bytes.
SUBJECT_KEY = 500
_HASH = 16


def bounded(value: str, limit: int) -> str:
    """`value` when it fits in `limit` characters, else its start, `~` and a hash of it."""
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]
    return f"{value[: limit - _HASH - 1]}~{digest}"


def bounded_or_none(value: str | None, limit: int) -> str | None:
    return None if value is None else bounded(value, limit)


def person_key(address: Address) -> str:
    """The people row of an address: the address, or `(name)` when it has none."""
    return bounded(address.address or f"({address.name})", ADDRESS)


def envelope_key(address: str) -> str:
    """An envelope recipient (already lower case) as its people row names it."""
    return bounded(address, ADDRESS)


def subject_key(subject: str) -> str:
    """The normalised subject the subject fallback of threading looks messages up by."""
    return bounded(normalize_subject(subject), SUBJECT_KEY)
