"""The people a reader may write to from the viewer: those of the mail they may see.

A new discussion goes to addresses the reader already corresponds with (a
sender, To or Cc of a message they may see) or to colleagues (staff): the
viewer is not a way to mail the world, and the addresses it offers as the
reader types are never taken from mail they were not sent.
"""

from __future__ import annotations

from sqlalchemy import func, literal_column, or_, select, union_all
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, normalize_address
from bridge.store.tables import Message, Person, Recipient
from bridge.store.visibility.access import NAMING_KINDS, person_id, visible_arms, visible_condition

OFFERED = 300  # addresses offered as the reader types: the most frequent first


def correspondents(session: Session, viewer: Viewer, limit: int = OFFERED) -> list[str]:
    """Addresses of the senders, To and Cc of messages `viewer` may see, most frequent first."""
    seen = visible_arms(session, viewer, Message.id, Message.sender_id)
    if seen is None:
        return []
    visible = seen.subquery()
    people = union_all(
        select(visible.c.sender_id.label("pid")),
        select(Recipient.person_id.label("pid"))
        .join(visible, visible.c.id == Recipient.message_pk)
        .where(Recipient.kind.in_(NAMING_KINDS)),
    ).subquery()
    uses = func.count().label("uses")
    rows = session.execute(
        select(Person.address, uses)
        .join(people, people.c.pid == Person.id)
        .where(Person.address != viewer.address, Person.address.like("%@%"))
        .group_by(Person.address)
        .order_by(literal_column("uses").desc(), Person.address)
        .limit(limit)
    ).all()
    return [str(address) for address, _uses in rows]


def corresponds_with(session: Session, viewer: Viewer, address: str) -> bool:
    """Whether `address` is a sender, To or Cc of a message `viewer` may see."""
    target = person_id(session, normalize_address(address))
    if target is None:
        return False
    named = select(Recipient.message_pk).where(
        Recipient.person_id == target, Recipient.kind.in_(NAMING_KINDS)
    )
    query = (
        select(Message.id)
        .where(visible_condition(session, viewer))
        .where(or_(Message.sender_id == target, Message.id.in_(named)))
        .limit(1)
    )
    return session.execute(query).first() is not None
