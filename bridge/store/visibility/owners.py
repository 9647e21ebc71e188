"""Owners recorded on copies already stored: an archive imported before it had owners.

A copy's owners are the people it was delivered to: its delivery's
`envelope_to` and, per person, `envelope_recipients`. New copies get them
from their `Provenance` when the batch writer stores them; this adds them
to copies stored earlier without. Callers own the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.store.db import bulk_insert, chunks
from bridge.store.tables import Delivery, EnvelopeRecipient, Person, table
from bridge.store.write.message_rows import envelope_addresses, unique_rows


def record_owners(
    session: Session, source: str, owners_by_location: Mapping[str, Sequence[str]]
) -> int:
    """Add owners to the stored copies of `source` at each location; returns how many changed.

    `owners_by_location` maps a delivery location (for imports, the file's
    path) to its owners. Idempotent: an owner a copy already has is left alone.
    """
    if not owners_by_location:
        return 0
    changed: list[dict[str, object]] = []
    pairs: list[tuple[int, str]] = []
    # One pass over the source's deliveries: `location` has no index, and an
    # archive's files are too many for IN lists.
    rows = session.execute(
        select(Delivery.id, Delivery.message_pk, Delivery.location, Delivery.envelope_to)
        .where(Delivery.source == source)
        .execution_options(yield_per=5000)
    )
    for delivery_id, message_pk, location, envelope_to in rows:
        owners = owners_by_location.get(location)
        if not owners:
            continue
        have = [a for a in (envelope_to or "").split("\n") if a]
        known = set(envelope_addresses(have))
        missing = [a for a in envelope_addresses(owners) if a not in known]
        if missing:
            changed.append({"id": delivery_id, "envelope_to": "\n".join([*have, *missing])})
            pairs.extend((message_pk, address) for address in missing)
    if not changed:
        return 0
    session.execute(update(Delivery), changed)
    people = _people(session, sorted({address for _pk, address in pairs}))
    held = [{"message_pk": pk, "person_id": people[address]} for pk, address in pairs]
    held = unique_rows(held, "message_pk", "person_id")
    bulk_insert(session.connection(), table(EnvelopeRecipient), held, ignore=True)
    return len(changed)


def _people(session: Session, addresses: list[str]) -> dict[str, int]:
    """The people ids of `addresses`, adding the people not yet known."""
    found = _known(session, addresses)
    new = [{"address": a, "name": ""} for a in addresses if a not in found]
    if new:
        bulk_insert(session.connection(), table(Person), new, ignore=True)
        found.update(_known(session, [row["address"] for row in new]))
    return found


def _known(session: Session, addresses: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in chunks(addresses):
        rows = session.execute(select(Person.address, Person.id).where(Person.address.in_(chunk)))
        found.update({address: pk for address, pk in rows})
    return found
