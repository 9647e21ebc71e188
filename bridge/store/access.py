"""The access rule of `bridge.core.access`, asked of the store.

`visible_thread_ids` is one SQL statement (no per-thread round trips): the
threads the viewer was party to, found through the indexes on
`messages.sender_id`, `recipients.person_id` and
`envelope_recipients.person_id`, or threads in a space they may read that
are not private.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnElement, CompoundSelect, Engine, false, func, or_, select
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, may_see_message, normalize_address
from bridge.store.tables import Delivery, EnvelopeRecipient, Message, Person, Recipient, Thread

CHUNK = 500  # ids per IN (...): well under SQLite's bound-parameter limit


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


def _person_id(session: Session, address: str) -> int | None:
    if not address:
        return None
    found = session.execute(select(Person.id).where(Person.address == address)).scalar()
    return None if found is None else int(found)


def _party_thread_ids(
    session: Session, person: int, within: list[int] | None = None
) -> CompoundSelect[Any]:
    """Threads `person` is party to, as a subquery: the whole thread is theirs to read.

    They received one of its messages from someone else (To, Cc, Bcc or an
    envelope recipient), or they started it (they sent a message that hangs
    under no stored message). Writing a reply is not enough: a stranger who
    names a known Message-ID in References is threaded in, but sees only
    what they were party to themselves (`_writer_thread_ids`).
    """
    received_from_others = or_(Message.sender_id.is_(None), Message.sender_id != person)
    parts = [
        select(Message.thread_id)
        .join(Recipient, Recipient.message_pk == Message.id)
        .where(Recipient.person_id == person, received_from_others),
        select(Message.thread_id)
        .join(EnvelopeRecipient, EnvelopeRecipient.message_pk == Message.id)
        .where(EnvelopeRecipient.person_id == person, received_from_others),
        select(Message.thread_id).where(Message.sender_id == person, Message.parent_id.is_(None)),
    ]
    if within is not None:
        parts = [part.where(Message.thread_id.in_(within)) for part in parts]
    return parts[0].union(*parts[1:])


def _writer_thread_ids(session: Session, person: int, within: list[int] | None = None) -> Any:
    """Threads holding a message `person` wrote: they see that much of it, at least."""
    query = select(Message.thread_id).where(Message.sender_id == person)
    return query if within is None else query.where(Message.thread_id.in_(within))


def party_thread_ids(session: Session, viewer: Viewer, within: list[int] | None = None) -> set[int]:
    """The threads the viewer is party to, among `within` (all when None): theirs to read whole."""
    person = _person_id(session, normalize_address(viewer.address))
    if person is None:
        return set()
    if within is None:
        return set(session.execute(_party_thread_ids(session, person)).scalars())
    found: set[int] = set()
    for part in _chunks(sorted(set(within))):
        found.update(session.execute(_party_thread_ids(session, person, part)).scalars())
    return found


# The threads a reader is party to change only when mail is stored, and
# search asks for all of them at every query: kept per engine (dropped with
# it), address and newest delivery (every stored copy is one), for the last
# few hundred readers.
_PARTY_SETS: WeakKeyDictionary[Engine, OrderedDict[tuple[str, int], frozenset[int]]] = (
    WeakKeyDictionary()
)
_PARTY_SETS_KEPT = 512
_PARTY_SETS_LOCK = threading.Lock()  # the store's read threads share it


def party_thread_ids_now(session: Session, viewer: Viewer) -> frozenset[int]:
    """`party_thread_ids` over all threads, kept until the next stored copy."""
    address = normalize_address(viewer.address)
    if not address:
        return frozenset()
    newest = session.execute(select(func.max(Delivery.id))).scalar() or 0
    engine = session.get_bind().engine
    key = (address, int(newest))
    with _PARTY_SETS_LOCK:
        kept = _PARTY_SETS.setdefault(engine, OrderedDict())
        found = kept.get(key)
        if found is not None:
            kept.move_to_end(key)
            return found
    found = frozenset(party_thread_ids(session, viewer))
    with _PARTY_SETS_LOCK:
        kept[key] = found
        while len(kept) > _PARTY_SETS_KEPT:
            kept.popitem(last=False)
    return found


def visible_condition(
    session: Session, viewer: Viewer, within: list[int] | None = None
) -> ColumnElement[bool]:
    """The rule as a WHERE clause on `threads`: listings page and count in SQL with it.

    `within` narrows the party subqueries to those threads (one thread's page
    must not evaluate every thread the reader ever wrote in).
    """
    person = _person_id(session, normalize_address(viewer.address))
    conditions: list[ColumnElement[bool]] = []
    if person is not None:
        conditions.append(Thread.id.in_(_party_thread_ids(session, person, within)))
        conditions.append(Thread.id.in_(_writer_thread_ids(session, person, within)))
    if viewer.spaces:
        conditions.append(Thread.space.in_(sorted(viewer.spaces)) & Thread.private.is_(False))
    return or_(*conditions) if conditions else false()


def visible_thread_ids(
    session: Session, viewer: Viewer, candidates: list[int] | None = None
) -> set[int]:
    """The threads `viewer` may see, among `candidates` (all threads when None)."""
    if candidates is None:
        where = visible_condition(session, viewer)
        return set(session.execute(select(Thread.id).where(where)).scalars())
    seen: set[int] = set()
    for part in _chunks(sorted(set(candidates))):
        where = visible_condition(session, viewer, part)
        seen.update(session.execute(select(Thread.id).where(Thread.id.in_(part), where)).scalars())
    return seen


def message_parties(session: Session, message_pks: list[int]) -> dict[int, set[str]]:
    """Lower-case addresses of each message's sender, To/Cc/Bcc and envelope recipients."""
    parties: dict[int, set[str]] = defaultdict(set)
    for part in _chunks(message_pks):
        senders = select(Message.id, Person.address).join(Person, Person.id == Message.sender_id)
        for pk, address in session.execute(senders.where(Message.id.in_(part))):
            parties[pk].add(address.lower())
        people = select(Recipient.message_pk, Person.address).join(
            Person, Person.id == Recipient.person_id
        )
        for pk, address in session.execute(people.where(Recipient.message_pk.in_(part))):
            parties[pk].add(address.lower())
        envelopes = select(EnvelopeRecipient.message_pk, Person.address).join(
            Person, Person.id == EnvelopeRecipient.person_id
        )
        for pk, address in session.execute(envelopes.where(EnvelopeRecipient.message_pk.in_(part))):
            parties[pk].add(address.lower())
    return parties


def thread_participants(session: Session, thread_ids: list[int]) -> dict[int, set[str]]:
    """Every party to each thread: senders, To, Cc, Bcc and envelope recipients."""
    result: dict[int, set[str]] = {tid: set() for tid in thread_ids}
    for part in _chunks(sorted(set(thread_ids))):
        rows = session.execute(
            select(Message.id, Message.thread_id).where(Message.thread_id.in_(part))
        ).all()
        parties = message_parties(session, [pk for pk, _ in rows])
        for pk, tid in rows:
            result[tid] |= parties.get(pk, set())
    return result


def visible_messages(session: Session, viewer: Viewer, thread_id: int) -> list[Message]:
    """The thread's messages the viewer may see, oldest first; [] when the thread is hidden.

    Callers answer 404 on [] exactly as for a missing thread.
    """
    ids = visible_message_ids(session, viewer, thread_id)
    if not ids:
        return []
    by_id: dict[int, Message] = {}
    for part in _chunks(list(ids)):
        query = select(Message).where(Message.id.in_(part))
        by_id.update((m.id, m) for m in session.scalars(query))
    return [by_id[pk] for pk in ids]


def visible_message_ids(session: Session, viewer: Viewer, thread_id: int) -> tuple[int, ...]:
    """The ids of `visible_messages`, oldest first, reading only what the rule needs.

    Parties are looked up only for messages the rule could hide whoever
    received them (private ones, or any when the viewer is no party to the
    thread and does not read its space).
    """
    if thread_id not in visible_thread_ids(session, viewer, [thread_id]):
        return ()
    thread = session.get(Thread, thread_id)
    if thread is None:
        return ()
    rows = session.execute(
        select(Message.id, Message.space, Message.private)
        .where(Message.thread_id == thread_id)
        .order_by(Message.sort_date, Message.id)
    ).all()
    party = thread_id in party_thread_ids(session, viewer, [thread_id])
    nobody: set[str] = set()

    def shown(parties: set[str], space: str | None, private: bool) -> bool:
        return may_see_message(
            viewer, parties, space, private, thread.space, thread.private, thread_party=party
        )

    doubtful = [pk for pk, space, private in rows if not shown(nobody, space, private)]
    parties = message_parties(session, doubtful) if doubtful else {}
    return tuple(
        pk for pk, space, private in rows if shown(parties.get(pk, nobody), space, private)
    )
