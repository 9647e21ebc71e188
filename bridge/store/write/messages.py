"""Writing messages in batches: dedupe, thread linking and indexing, in the caller's transaction.

One `BatchWriter.store` call handles a batch with a fixed number of queries:
it looks up everything the batch needs at once (known copies, ids, content
hashes, references, candidate parents), decides in memory, then writes each
table with one multi-row statement. Threads merge with a union-find; their
trees are rebuilt once at the end. Nothing here commits.

A copy is merged into a stored message only when their content hashes are
equal. A copy whose Message-ID is held by a message with other content is an
id collision: the two are stored apart, and the message stored first keeps
the id, so replies naming it thread with that one. The newcomer is stored
under its collision id (`dedupe.collision_id`) and flagged `id-collision`;
who may see it follows from its own delivery and headers, as for any
message. A stored message never loses its id: knowing an id, which anyone
quoted in a thread does, is not enough to displace the mail that holds it
(a Date can be forged, so "the earliest Date wins" would let a back-dated
copy take a genuine message's id and its replies).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.orm import Session

from bridge.core.linking import dedupe
from bridge.core.linking.threads import ThreadMember, fallback_key, reply_link
from bridge.core.mail.bounds import (
    CONTENT_ID,
    CONTENT_TYPE,
    LIST_ID,
    bounded,
    bounded_or_none,
    person_key,
    subject_key,
)
from bridge.core.message import Address, Flag, ParsedMessage, RuleDecision
from bridge.core.normalize import is_reply_subject
from bridge.pipeline import Outcome, Prepared
from bridge.search import index_messages
from bridge.store.bookkeeping import rule_hits
from bridge.store.bookkeeping.quarantine import STORE_FAILED, retry_delay
from bridge.store.db import IdAllocator, bulk_insert, chunks
from bridge.store.tables import (
    Attachment,
    ContentHash,
    Delivery,
    EnvelopeRecipient,
    FallbackLink,
    Message,
    MessageId,
    Person,
    Quarantined,
    RawBlob,
    Recipient,
    Reference,
    Skipped,
    Thread,
    ThreadRedirect,
    table,
)
from bridge.store.write import threading_store
from bridge.store.write.lookups import Lookups
from bridge.store.write.message_rows import (
    conversation_key,
    copy_columns,
    envelope_addresses,
    new_member,
    references_of,
    unique_rows,
)

log = logging.getLogger(__name__)

FALLBACK_WINDOW = timedelta(days=60)
# Quoted history is indexed up to this many characters: the most recent quote
# (what is answered) is searchable, while older history repeats messages
# that are indexed in their own right.
INDEXED_QUOTE_CHARS = 4000


@dataclass
class _NewMessage:
    pk: int
    thread: int
    values: dict[str, Any]
    member: ThreadMember
    parsed: ParsedMessage
    item: Prepared


class BatchWriter:
    """Stores one batch of prepared messages; see the module docstring."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.conn: Connection = session.connection()
        self.dialect = self.conn.dialect.name
        self.now = now
        self.reasons: list[str | None] = []
        self._message_ids = IdAllocator(self.conn, "messages")
        self._thread_ids = IdAllocator(
            self.conn, "threads", also_used=("thread_redirects", "old_id")
        )
        self._person_ids = IdAllocator(self.conn, "people")
        self._thread_parent: dict[int, int] = {}
        self._new_threads: set[int] = set()
        self._touched: set[int] = set()
        self._rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._new: list[_NewMessage] = []
        self._new_by_pk: dict[int, _NewMessage] = {}
        self._canonical_dirty: set[int] = set()
        self._batch_subjects: dict[str, list[_NewMessage]] = defaultdict(list)
        self._rule_hits: dict[str, int] = {}
        self._decided: dict[int, list[RuleDecision]] = defaultdict(list)

    # -- the batch -----------------------------------------------------------

    def store(self, items: list[Prepared]) -> list[Outcome]:
        good = [i for i in items if i.failure is None and i.parsed is not None]
        self.look = Lookups(self.conn, items, good, window=FALLBACK_WINDOW)
        outcomes = [self._accept(item) for item in items]
        self._write()
        return outcomes

    def _accept(self, item: Prepared) -> Outcome:
        prov = item.raw.provenance
        key = (prov.source, prov.key)
        if key in self.look.seen:
            self.reasons.append(None)
            return Outcome.SEEN
        self.look.seen.add(key)
        self._rows["raw"].append(
            {"sha256": item.sha256, "size": len(item.raw.data), "data": item.compressed}
        )
        if item.failure is not None:
            self._quarantine(item, *item.failure)
            return Outcome.QUARANTINED
        assert item.message_id and item.content_hash
        self.reasons.append(None)
        for rule in item.decision.hits:
            self._rule_hits[rule] = self._rule_hits.get(rule, 0) + 1
        if item.decision.skip is not None:
            self._skip(item, item.decision.skip)
            return Outcome.SKIPPED
        pk = self.look.hashes.get(item.content_hash)
        if pk is not None:
            self._merge(pk, item)
            return Outcome.MERGED
        if item.message_id in self.look.ids:
            self._add_new(item, dedupe.collision_id(item.message_id, item.content_hash))
        else:
            self._add_new(item, item.message_id)
        return Outcome.STORED

    def _quarantine(self, item: Prepared, reason: str, detail: str) -> None:
        prov = item.raw.provenance
        self.reasons.append(reason)
        log.warning("quarantined %s (%s): %s", prov.key, reason, detail)
        retry_at = self.now + retry_delay(0) if reason == STORE_FAILED else None
        self._rows["quarantine"].append(
            {
                **copy_columns(item),
                "reason": reason,
                "detail": detail,
                "created_at": self.now,
                "attempts": 0,
                "retry_at": retry_at,
            }
        )

    def _skip(self, item: Prepared, rule: str) -> None:
        columns = copy_columns(item)
        del columns["envelope_from"], columns["envelope_to"]
        self._rows["skipped"].append(
            {**columns, "message_id": item.message_id, "rule": rule, "created_at": self.now}
        )

    # -- threads as a union-find --------------------------------------------

    def _find(self, thread: int) -> int:
        root = thread
        while self._thread_parent.get(root, root) != root:
            root = self._thread_parent[root]
        while thread != root:  # path compression
            self._thread_parent[thread], thread = root, self._thread_parent.get(thread, thread)
        return root

    def _join(self, threads: set[int]) -> int:
        roots = {self._find(t) for t in threads}
        keep = min(roots)
        for root in roots:
            self._thread_parent[root] = keep
        self._thread_parent.setdefault(keep, keep)
        self._touched.add(keep)
        return keep

    def _thread_of(self, pk: int) -> int:
        return self._find(self.look.thread_of[pk])

    # -- a copy of a known message --------------------------------------------

    def _merge(self, pk: int, item: Prepared) -> None:
        """A copy with the content hash of message `pk`; its id, if new, becomes an alias."""
        assert item.message_id and item.content_hash
        self._delivery(pk, item)
        # The sender's own copy is the one with the Bcc line: whichever copy came
        # first, its Bcc list is recorded (shown only to the sender and to them).
        if item.parsed is not None:
            for position, address in enumerate(item.parsed.bcc):
                self._rows["merged_bcc"].append(
                    {
                        "message_pk": pk,
                        "kind": "bcc",
                        "position": position,
                        "person_id": self._person(address),
                    }
                )
        decision = item.decision
        if decision.space or decision.tags or decision.private:
            self._decided[pk].append(decision)
        if item.message_id in self.look.ids:
            return
        self.look.ids[item.message_id] = pk
        self._rows["ids"].append({"message_id": item.message_id, "message_pk": pk})
        self.look.ids_of[pk].add(item.message_id)
        self._canonical_dirty.add(pk)
        # Mail that named the new alias as its parent belongs in this thread.
        waiting = self.look.referencing.get(item.message_id, set())
        self._join({self._thread_of(pk), *waiting})

    # -- a new message -------------------------------------------------------

    def _add_new(self, item: Prepared, stored_id: str) -> None:
        """Store `item` as a message known by `stored_id` (a collision id if not its own)."""
        parsed, split = item.parsed, item.split
        assert parsed is not None and split is not None and item.message_id
        collision = stored_id != item.message_id
        refs = references_of(parsed)
        conversation = conversation_key(parsed.thread_index)
        related: set[int] = set()
        for ref in refs:
            if ref in self.look.ids:
                related.add(self._thread_of(self.look.ids[ref]))
        for ident in (*refs, stored_id):
            related.update(self.look.referencing.get(ident, ()))
        if conversation:
            related.update(self.look.conversations.get(conversation, ()))
        if related:
            thread = self._join(related)
        else:
            thread = self._thread_ids()
            self._thread_parent[thread] = thread
            self._new_threads.add(thread)
            self._touched.add(thread)
        pk = self._message_ids()
        subject_norm = subject_key(parsed.subject)
        values = {
            "id": pk,
            "message_id": stored_id,
            "raw_sha256": item.sha256,
            "thread_id": thread,
            "parent_id": None,
            "date": parsed.date,
            "sort_date": parsed.date or self.now,
            "sent_local": parsed.date_local,
            "sender_id": self._person(parsed.sender) if parsed.sender else None,
            "subject": parsed.subject,
            "subject_norm": subject_norm,
            "body": item.body,
            "references": "\n".join(refs),
            "in_reply_to": "\n".join(parsed.in_reply_to),
            "thread_index": parsed.thread_index,
            "conversation": conversation,
            "is_reply": is_reply_subject(parsed.subject) or bool(split.quoted_text.strip()),
            "has_attachment": any(not a.inline for a in parsed.attachments),
            "list_id": bounded_or_none(parsed.list_id, LIST_ID),
            "flags": _flags(",".join(parsed.flags), collision=collision),
            "arrival": self.look.next_arrival(),
            "space": item.decision.space,
            "tags": ",".join(sorted(set(item.decision.tags))),
            "private": item.decision.private,
        }
        member = new_member(values, parsed, split.new_text, split.quoted_text)
        new = _NewMessage(pk, thread, values, member, parsed, item)
        self._new.append(new)
        self._new_by_pk[pk] = new
        self.look.thread_of[pk] = thread
        self.look.ids[stored_id] = pk
        self.look.ids_of[pk] = {stored_id}
        assert item.content_hash
        self.look.hashes[item.content_hash] = pk
        for ident in refs:
            self.look.referencing[ident].add(thread)
        if conversation:
            self.look.conversations[conversation].add(thread)
        self._queue_dependents(pk, parsed, refs)
        self._delivery(pk, item)
        self._fallback(new)

    def _fallback(self, new: _NewMessage) -> None:
        """Link mail without threading headers by subject, participants, time and quotes."""
        key = fallback_key(new.member)
        date = new.member.date
        if not key or date is None:
            return
        links: list[tuple[int, int, float]] = []
        candidates = [
            *((pk, member) for pk, member in self.look.candidates.get(key, ())),
            *((other.pk, other.member) for other in self._batch_subjects.get(key, ())),
        ]
        for pk, other in candidates:
            if other.date is None or abs(other.date - date) > FALLBACK_WINDOW:
                continue
            if other.date <= date and not new.member.references:
                score = reply_link(new.member, other, window=FALLBACK_WINDOW)
                if score is not None:
                    links.append((new.pk, pk, score))
            if other.date >= date and not other.references:
                score = reply_link(other, new.member, window=FALLBACK_WINDOW)
                if score is not None:
                    links.append((pk, new.pk, score))
        self._batch_subjects[key].append(new)
        if not links:
            return
        for child, parent, score in links:
            self._rows["links"].append({"child_pk": child, "parent_pk": parent, "score": score})
        linked = {self._thread_of(pk) for link in links for pk in link[:2]}
        new.thread = self._join(linked)

    # -- people and deliveries ---------------------------------------------------

    def _person(self, address: Address) -> int:
        key = person_key(address)
        pk = self.look.people.get(key)
        if pk is None:
            pk = self._person_ids()
            self.look.people[key] = pk
            self._rows["people"].append({"id": pk, "address": key, "name": address.name})
            if not address.name:
                self.look.unnamed.add(pk)
        elif address.name and pk in self.look.unnamed:
            # First seen bare (an envelope, a "From: a@b" line): the viewer shows
            # the name later mail gives, for every message from the address.
            self.look.unnamed.discard(pk)
            self._rows["names"].append({"person_pk": pk, "given_name": address.name})
        return pk

    def _delivery(self, pk: int, item: Prepared) -> None:
        self._rows["deliveries"].append(
            {**copy_columns(item), "message_pk": pk, "received_at": self.now}
        )
        for address in envelope_addresses(item.raw.provenance.envelope_to):
            person = self._person(Address("", address))
            self._rows["envelope"].append({"message_pk": pk, "person_id": person})

    # -- writing -------------------------------------------------------------

    def _write(self) -> None:
        rows = self._rows
        conn = self.conn
        bulk_insert(conn, table(RawBlob), unique_rows(rows["raw"], "sha256"), ignore=True)
        bulk_insert(conn, table(Person), rows["people"])
        if rows["names"]:
            people = table(Person)
            conn.execute(
                people.update()
                .where(people.c.id == bindparam("person_pk"), people.c.name == "")
                .values(name=bindparam("given_name")),
                rows["names"],
            )
        live_new_threads = sorted(t for t in self._new_threads if self._find(t) == t)
        bulk_insert(
            conn,
            table(Thread),
            [{"id": t, "subject": "", "message_count": 0} for t in live_new_threads],
        )
        self._merge_existing_threads()
        if self._new:
            message_rows = []
            for new in self._new:
                new.values["thread_id"] = self._find(new.thread)
                message_rows.append(new.values)
            bulk_insert(conn, table(Message), message_rows)
            self._dependents()
        rows["ids"] = unique_rows(rows["ids"], "message_id")
        for model, name in (
            (MessageId, "ids"),
            (ContentHash, "hashes"),
            (Delivery, "deliveries"),
        ):
            bulk_insert(conn, table(model), rows[name])
        bcc = unique_rows(rows["merged_bcc"], "message_pk", "position")
        bulk_insert(conn, table(Recipient), bcc, ignore=True)
        envelope = unique_rows(rows["envelope"], "message_pk", "person_id")
        bulk_insert(conn, table(EnvelopeRecipient), envelope, ignore=True)
        links = unique_rows(rows["links"], "child_pk", "parent_pk")
        bulk_insert(conn, table(FallbackLink), links, ignore=True)
        bulk_insert(conn, table(Quarantined), rows["quarantine"], ignore=True)
        bulk_insert(conn, table(Skipped), rows["skipped"], ignore=True)
        self._update_canonical_ids()
        self._apply_decisions_to_copies()
        rule_hits.count(conn, self._rule_hits, self.now)
        threading_store.rebuild_threads(self.session, {self._find(t) for t in self._touched})

    def _dependents(self) -> None:
        """Rows that hang off the new messages, queued by `_queue_dependents`."""
        rows = self._rows
        for model, name in (
            (Reference, "refs"),
            (Recipient, "recipients"),
            (Attachment, "attachments"),
        ):
            bulk_insert(self.conn, table(model), rows[name])
        rows["ids"][:0] = [
            {"message_id": new.values["message_id"], "message_pk": new.pk} for new in self._new
        ]
        rows["hashes"][:0] = [
            {"hash": new.item.content_hash, "message_pk": new.pk} for new in self._new
        ]
        index_messages(
            self.conn,
            [
                (
                    new.pk,
                    new.values["subject"],
                    new.member.new_text,
                    new.member.quoted_text[:INDEXED_QUOTE_CHARS],
                )
                for new in self._new
            ],
        )

    def _queue_dependents(self, pk: int, parsed: ParsedMessage, refs: list[str]) -> None:
        rows = self._rows
        for position, ref in enumerate(refs):
            rows["refs"].append({"message_pk": pk, "position": position, "ref_id": ref})
        for kind, addresses in (("to", parsed.to), ("cc", parsed.cc), ("bcc", parsed.bcc)):
            for position, address in enumerate(addresses):
                rows["recipients"].append(
                    {
                        "message_pk": pk,
                        "kind": kind,
                        "position": position,
                        "person_id": self._person(address),
                    }
                )
        for position, a in enumerate(parsed.attachments):
            rows["attachments"].append(
                {
                    "message_pk": pk,
                    "position": position,
                    "filename": a.filename,
                    "content_type": bounded(a.content_type, CONTENT_TYPE),
                    "size": a.size,
                    "content_id": bounded_or_none(a.content_id, CONTENT_ID),
                    "inline": a.inline,
                }
            )

    def _merge_existing_threads(self) -> None:
        """Threads merged into another: stored ones move; all leave a redirect.

        A thread made and merged within this batch leaves a redirect too, so
        its id is used up exactly as it would be had the batch been split:
        thread ids never depend on batch boundaries, and are never reused.
        """
        born_merged = sorted(t for t in self._new_threads if self._find(t) != t)
        bulk_insert(
            self.conn,
            table(ThreadRedirect),
            [{"old_id": t, "new_id": self._find(t)} for t in born_merged],
        )
        merges = [
            (old, self._find(old))
            for old in list(self._thread_parent)
            if old not in self._new_threads and self._find(old) != old
        ]
        if not merges:
            return
        by_keep: dict[int, list[int]] = defaultdict(list)
        for old, keep in merges:
            by_keep[keep].append(old)
        for keep, olds in by_keep.items():
            threading_store.merge_threads(self.session, keep, sorted(olds))

    def _update_canonical_ids(self) -> None:
        existing = [pk for pk in self._canonical_dirty if pk not in {n.pk for n in self._new}]
        updates = []
        for pk in existing:
            canonical = dedupe.canonical_id(self.look.ids_of[pk])
            if canonical != self.look.canonical.get(pk):
                updates.append({"pk": pk, "mid": canonical})
        for new in self._new:
            canonical = dedupe.canonical_id(self.look.ids_of[new.pk])
            if canonical != new.values["message_id"]:
                updates.append({"pk": new.pk, "mid": canonical})
        if updates:
            messages = table(Message)
            self.conn.execute(
                update(messages)
                .where(messages.c.id == bindparam("pk"))
                .values(message_id=bindparam("mid")),
                updates,
            )

    def _apply_decisions_to_copies(self) -> None:
        """A copy that reached the rules differently may add tags, a space or privacy.

        Tags and privacy add up; of two spaces the smallest slug is kept, so the
        outcome is the same whichever copy came first.
        """
        stored = [pk for pk in self._decided if pk not in {n.pk for n in self._new}]
        for new in self._new:
            if new.pk in self._decided:
                values = new.values
                self._decided[new.pk].insert(
                    0,
                    RuleDecision(
                        values["space"],
                        tuple(t for t in values["tags"].split(",") if t),
                        values["private"],
                    ),
                )
        current = {
            pk: (space, tags, private)
            for part in chunks(stored)
            for pk, space, tags, private in self.conn.execute(
                select(Message.id, Message.space, Message.tags, Message.private).where(
                    Message.id.in_(part)
                )
            )
        }
        for new in self._new:
            if new.pk in self._decided:
                current[new.pk] = (None, "", False)
        updates = []
        for pk, decisions in self._decided.items():
            space, tags, private = current[pk]
            all_tags = {t for t in tags.split(",") if t}
            for decision in decisions:
                # Copies the rules put in different spaces: the smallest slug, so
                # the space (and who reads it) never depends on arrival order.
                space = min(filter(None, (space, decision.space)), default=None)
                all_tags.update(decision.tags)
                private = private or decision.private
            updates.append(
                {"pk": pk, "space": space, "tags": ",".join(sorted(all_tags)), "private": private}
            )
        if updates:
            messages = table(Message)
            self.conn.execute(
                update(messages)
                .where(messages.c.id == bindparam("pk"))
                .values(
                    space=bindparam("space"), tags=bindparam("tags"), private=bindparam("private")
                ),
                updates,
            )


def _flags(flags: str, *, collision: bool) -> str:
    """Comma-separated flags, sorted, with `id-collision` added when `collision`."""
    found = {flag for flag in flags.split(",") if flag}
    if collision:
        found.add(Flag.ID_COLLISION)
    return ",".join(sorted(found))
