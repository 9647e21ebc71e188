"""Rows and values the batch writer builds from a prepared message (no database access)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.core.linking.threads import ThreadMember, thread_index_keys
from bridge.core.mail.bounds import envelope_key
from bridge.core.message import ParsedMessage
from bridge.pipeline import Prepared


def copy_columns(item: Prepared) -> dict[str, Any]:
    """Where a copy came from: the columns deliveries, quarantine and skipped rows share."""
    prov = item.raw.provenance
    return {
        "raw_sha256": item.sha256,
        "source": prov.source,
        "location": prov.location,
        "mailbox": prov.mailbox,
        "key": prov.key,
        "envelope_from": prov.envelope_from,
        "envelope_to": "\n".join(prov.envelope_to),
    }


def envelope_addresses(envelope_to: Iterable[str]) -> list[str]:
    """The envelope recipients of a copy, lower-cased, each once, in order."""
    seen: dict[str, None] = {}
    for value in envelope_to:
        address = value.strip().lower()
        if address and "@" in address:
            seen[envelope_key(address)] = None
    return list(seen)


def unique_rows(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def references_of(parsed: ParsedMessage) -> list[str]:
    """References then any In-Reply-To id not among them; never the message itself."""
    refs = list(dict.fromkeys(parsed.references))
    for ref in parsed.in_reply_to:
        if ref not in refs:
            refs.append(ref)
    return [r for r in refs if r and r != parsed.message_id]


def conversation_key(thread_index: bytes | None) -> str | None:
    if not thread_index:
        return None
    try:
        key, _parent = thread_index_keys(thread_index)
    except ValueError:
        return None
    return key.hex()


def new_member(
    values: dict[str, Any], parsed: ParsedMessage, new_text: str, quoted_text: str
) -> ThreadMember:
    participants = {a.address for a in (*parsed.to, *parsed.cc) if a.address}
    sender = parsed.sender.address if parsed.sender else ""
    if sender:
        participants.add(sender)
    return ThreadMember(
        message_id=values["message_id"],
        aliases=(),
        references=tuple(r for r in values["references"].split("\n") if r),
        in_reply_to=parsed.in_reply_to,
        thread_index=parsed.thread_index,
        date=parsed.date,
        subject_norm=values["subject_norm"],
        is_reply=values["is_reply"],
        sender=sender,
        participants=frozenset(participants),
        new_text=new_text,
        quoted_text=quoted_text,
        sent_local=parsed.date_local,
    )
