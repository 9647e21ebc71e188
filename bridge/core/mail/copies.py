"""One copy of a message shown to someone who holds no copy of their own.

Each copy of a message carries headers that say whose copy it is: the
envelope recipient (Delivered-To, X-Original-To, Envelope-To, Received
"for <…>"), the mailbox it was filed in (Enron's X-Folder, X-Origin,
X-FileName), and in the sender's own copy the Bcc list. A reader who was
sent the message through a header or reads it in a space may see the
message, but not whose mailbox a copy came from nor who was Bcc'd, so they
get the copy with those header fields removed. Everything else, the body
included, is left byte for byte.
"""

from __future__ import annotations

import re

# Header fields that name one copy's recipient or mailbox, or a Bcc.
PER_COPY_FIELDS = frozenset(
    {
        "bcc",
        "resent-bcc",
        "x-bcc",
        "delivered-to",
        "x-original-to",
        "x-delivered-to",
        "envelope-to",
        "x-envelope-to",
        "x-rcpt-to",
        "x-forwarded-to",
        "x-original-recipient",
        "original-recipient",
        "received",
        "x-folder",
        "x-origin",
        "x-filename",
    }
)
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def _header_end(raw: bytes) -> int:
    """Where the header block's fields end: just after the last field's line break."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    found = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0]
    if not found:
        return len(raw)
    i, sep = min(found)
    return i + len(sep) // 2


def shared_copy(raw: bytes) -> bytes:
    """`raw` without the header fields in PER_COPY_FIELDS (folded lines included)."""
    end = _header_end(raw)
    kept: list[bytes] = []
    dropping = False
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        found = _FIELD_NAME.match(line)
        dropping = found is not None and found.group(1).lower().decode() in PER_COPY_FIELDS
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]
