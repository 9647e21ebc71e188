"""Everything a batch needs to know about what is already stored, fetched in a few queries."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from bridge.core.linking.threads import ThreadMember, fallback_key
from bridge.core.mail.bounds import person_key, subject_key
from bridge.pipeline import Prepared
from bridge.store.blobs import unpack_body
from bridge.store.db import chunks
from bridge.store.tables import (
    ContentHash,
    Delivery,
    Message,
    MessageId,
    Person,
    Quarantined,
    Reference,
)
from bridge.store.write import threading_store
from bridge.store.write.message_rows import conversation_key, envelope_addresses

MAX_CANDIDATES_PER_SUBJECT = 300


class Lookups:
    """Known copies, ids, hashes, references, people and fallback candidates for a batch.

    The writer updates these maps as it goes, so later messages of the batch
    see the earlier ones exactly as if they had been stored already.
    """

    def __init__(
        self, conn: Connection, items: list[Prepared], good: list[Prepared], window: timedelta
    ) -> None:
        self.conn = conn
        self.seen = self._seen(items)
        wanted_ids: set[str] = set()
        for item in good:
            assert item.parsed is not None and item.message_id
            wanted_ids.add(item.message_id)
            wanted_ids.update(item.parsed.references)
            wanted_ids.update(item.parsed.in_reply_to)
        self.ids: dict[str, int] = {}
        self.thread_of: dict[int, int] = {}
        self.canonical: dict[int, str] = {}
        for part in chunks(sorted(wanted_ids)):
            for mid, pk, thread, canonical in conn.execute(
                select(MessageId.message_id, Message.id, Message.thread_id, Message.message_id)
                .join(Message, Message.id == MessageId.message_pk)
                .where(MessageId.message_id.in_(part))
            ):
                self.ids[mid] = pk
                self.thread_of[pk] = thread
                self.canonical[pk] = canonical
        self.hashes: dict[str, int] = {}
        hashes = sorted({i.content_hash for i in good if i.content_hash})
        for part in chunks(hashes):
            for chash, pk, thread, canonical in conn.execute(
                select(ContentHash.hash, Message.id, Message.thread_id, Message.message_id)
                .join(Message, Message.id == ContentHash.message_pk)
                .where(ContentHash.hash.in_(part))
            ):
                self.hashes[chash] = pk
                self.thread_of[pk] = thread
                self.canonical[pk] = canonical
        self.ids_of: dict[int, set[str]] = defaultdict(set)
        for part in chunks(sorted(set(self.ids.values()) | set(self.hashes.values()))):
            for mid, pk in conn.execute(
                select(MessageId.message_id, MessageId.message_pk).where(
                    MessageId.message_pk.in_(part)
                )
            ):
                self.ids_of[pk].add(mid)
        self.referencing: dict[str, set[int]] = defaultdict(set)
        for part in chunks(sorted(wanted_ids)):
            for ref, thread in conn.execute(
                select(Reference.ref_id, Message.thread_id)
                .join(Message, Message.id == Reference.message_pk)
                .where(Reference.ref_id.in_(part))
                .distinct()
            ):
                self.referencing[ref].add(thread)
        self.conversations = self._conversations(good)
        # People known without a display name: the first message that gives one names them.
        self.unnamed: set[int] = set()
        self.people = self._people(good)
        self.candidates = self._candidates(good, window)
        self._arrival: int | None = None

    def next_arrival(self) -> int:
        if self._arrival is None:
            self._arrival = self.conn.execute(select(func.max(Message.arrival))).scalar() or 0
        self._arrival += 1
        return self._arrival

    def _seen(self, items: list[Prepared]) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        keys = sorted({i.raw.provenance.key for i in items})
        for part in chunks(keys):
            for table in (Delivery, Quarantined):
                query = select(table.source, table.key).where(table.key.in_(part))
                if table is Quarantined:
                    query = query.where(Quarantined.released_at.is_(None))
                seen.update((source, key) for source, key in self.conn.execute(query))
        return seen

    def _conversations(self, good: list[Prepared]) -> dict[str, set[int]]:
        wanted = sorted(
            {c for i in good if i.parsed and (c := conversation_key(i.parsed.thread_index))}
        )
        found: dict[str, set[int]] = defaultdict(set)
        for part in chunks(wanted):
            for conversation, thread in conn_rows(
                self.conn,
                select(Message.conversation, Message.thread_id)
                .where(Message.conversation.in_(part))
                .distinct(),
            ):
                found[conversation].add(thread)
        return found

    def _people(self, good: list[Prepared]) -> dict[str, int]:
        wanted: set[str] = set()
        for item in good:
            parsed = item.parsed
            assert parsed is not None
            for person in (parsed.sender, *parsed.to, *parsed.cc, *parsed.bcc):
                if person is not None:
                    wanted.add(person_key(person))
            wanted.update(envelope_addresses(item.raw.provenance.envelope_to))
        found: dict[str, int] = {}
        for part in chunks(sorted(wanted)):
            for address, pk, name in self.conn.execute(
                select(Person.address, Person.id, Person.name).where(Person.address.in_(part))
            ):
                found[address] = pk
                if not name:
                    self.unnamed.add(pk)
        return found

    def _candidates(
        self, good: list[Prepared], window: timedelta
    ) -> dict[str, list[tuple[int, ThreadMember]]]:
        """Stored messages that the fallback may link to this batch's messages."""
        dates = [i.parsed.date for i in good if i.parsed and i.parsed.date]
        subjects = sorted(
            {
                subject_key(i.parsed.subject)
                for i in good
                if i.parsed and i.parsed.date and subject_key(i.parsed.subject)
            }
        )
        found: dict[str, list[tuple[int, ThreadMember]]] = defaultdict(list)
        if not dates or not subjects:
            return found
        low, high = min(dates) - window, max(dates) + window
        rows: list[Any] = []
        for part in chunks(subjects):
            rows.extend(
                self.conn.execute(
                    select(Message)
                    .where(
                        Message.subject_norm.in_(part),
                        Message.sort_date >= low,
                        Message.sort_date <= high,
                        Message.date.is_not(None),
                    )
                    .order_by(Message.sort_date)
                )
            )
        if not rows:
            return found
        participants, senders = threading_store.participants_conn(
            self.conn, [row.id for row in rows]
        )
        for row in rows:
            self.thread_of.setdefault(row.id, row.thread_id)
            body = unpack_body(self.conn, row.body, row.raw_sha256)
            member = threading_store.member_from_row(
                row,
                participants.get(row.id, frozenset()),
                sender=senders.get(row.id, ""),
                new_text=body.new_text,
                quoted_text=body.quoted_text,
            )
            key = fallback_key(member)
            if key and len(found[key]) < MAX_CANDIDATES_PER_SUBJECT:
                found[key].append((row.id, member))
        return found


def conn_rows(conn: Connection, query: object) -> list[tuple]:
    return [tuple(row) for row in conn.execute(query)]  # type: ignore[call-overload]
