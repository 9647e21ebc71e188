"""Message identity: the content hash that recognises copies with different ids.

Like public-inbox's ContentHash: the same mail seen in many mailboxes (each
Enron inbox copy got its own synthetic Message-ID; resends) has the same
sender, date, subject and body, and so the same hash. Headers added in
transit (Received, X-Folder, list footers' headers) are left out.
"""

from __future__ import annotations

import hashlib

from bridge.core.message import ParsedMessage
from bridge.core.normalize import fold_whitespace, normalize_subject

SYNTHETIC_ID_DOMAIN = "content-hash.invalid"


def content_hash(parsed: ParsedMessage) -> str:
    """sha256 over sender, date, normalised subject and whitespace-folded body."""
    sender = parsed.sender.address if parsed.sender else ""
    date = parsed.date.strftime("%Y-%m-%dT%H:%M:%SZ") if parsed.date else ""
    parts = (
        sender,
        date,
        normalize_subject(parsed.subject),
        fold_whitespace(parsed.text),
        ",".join(sorted(f"{a.filename}:{a.size}" for a in parsed.attachments)),
    )
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def synthetic_message_id(hash_hex: str) -> str:
    """A stable Message-ID for mail that carries none, from its content hash."""
    return f"{hash_hex[:32]}@{SYNTHETIC_ID_DOMAIN}"


def is_synthetic(message_id: str) -> bool:
    return message_id.endswith("@" + SYNTHETIC_ID_DOMAIN)


def canonical_id(ids: set[str]) -> str:
    """The id a merged message is shown under: the smallest real id.

    Chosen from the whole set, never by arrival, so the store ends the same
    whatever order the copies came in.
    """
    real = [i for i in ids if not is_synthetic(i)]
    return min(real) if real else min(ids)
