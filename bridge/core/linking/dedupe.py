"""Message identity: the content hash that recognises copies with different ids.

Like public-inbox's ContentHash: the same mail seen in many mailboxes (each
Enron inbox copy got its own synthetic Message-ID; resends) has the same
sender, date, subject and body, and so the same hash. Headers added in
transit (Received, X-Folder, list footers' headers) are left out.

A copy is the same message only when it has the same content hash. A copy
whose Message-ID is already held by a message with other content (a forgery,
or a broken mailer) is stored apart under a collision id; the id stays with
the message stored first.
"""

from __future__ import annotations

import hashlib

from bridge.core.message import ParsedMessage
from bridge.core.normalize import fold_whitespace, normalize_subject

SYNTHETIC_ID_DOMAIN = "content-hash.invalid"
# A collision id is "<real id> collision:<first 16 hex digits of the content
# hash>". A normalised Message-ID never holds whitespace (core/normalize.py
# removes it), so no real id, and no id named in References, can equal one.
COLLISION_TAG = " collision:"


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


def collision_id(message_id: str, hash_hex: str) -> str:
    """The id a message is stored under when `message_id` is held by other content."""
    return f"{message_id}{COLLISION_TAG}{hash_hex[:16]}"


def is_collision_id(message_id: str) -> bool:
    return COLLISION_TAG in message_id


def real_id(message_id: str) -> str:
    """The Message-ID a collision id was made from; any other id unchanged."""
    return message_id.split(COLLISION_TAG, 1)[0]


def canonical_id(ids: set[str]) -> str:
    """The id a merged message is shown under: the smallest real id, else the smallest other.

    Chosen from the whole set, never by arrival, so the store ends the same
    whatever order the copies came in. Synthetic and collision ids are used
    only by a message that has no real id of its own.
    """
    return min(ids, key=lambda i: (is_synthetic(i) or is_collision_id(i), i))
