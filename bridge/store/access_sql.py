"""The access rule as SQL over `messages m`, for the search backends' WHERE clauses.

Search must filter before it ranks and cuts: a reader who may see few
threads must still find them among a common word's many matches, and counts
must cover only what they may see. This is `bridge.core.access`
(`may_see_thread` and then `may_see_message`) written for the backends' raw
SQL; tests check it against `bridge.store.access.visible_messages`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.core.access import Viewer, normalize_address
from bridge.store.access import party_thread_ids_now
from bridge.store.tables import Person

NEVER = "1=0"


def viewer_clause(session: Session, viewer: Viewer, params: dict[str, Any]) -> str:
    """` AND (…)` keeping the messages `viewer` may see; adds its values to `params`.

    A message is seen when the viewer was party to it, or when it is open
    (neither it nor its thread private, in its thread's space or one the
    viewer reads) in a thread the viewer was party to or whose space they read.
    """
    address = normalize_address(viewer.address)
    person = (
        session.execute(select(Person.id).where(Person.address == address)).scalar()
        if address
        else None
    )
    party: list[str] = []
    if person is not None:
        pid = int(person)
        party.append(f"m.sender_id = {pid}")
        party.append(
            f"EXISTS (SELECT 1 FROM recipients vr WHERE vr.message_pk = m.id "
            f"AND vr.person_id = {pid})"
        )
        party.append(
            f"EXISTS (SELECT 1 FROM envelope_recipients ve WHERE ve.message_pk = m.id "
            f"AND ve.person_id = {pid})"
        )
    spaces = sorted(viewer.spaces)
    for i, slug in enumerate(spaces):
        params[f"v_space{i}"] = slug
    listed = ",".join(f":v_space{i}" for i in range(len(spaces)))
    thread_space = f"vt.space IN ({listed})" if spaces else NEVER
    message_space = f"m.space IN ({listed})" if spaces else NEVER
    threads = sorted(party_thread_ids_now(session, viewer))
    party_threads = f"vt.id IN ({','.join(map(str, threads))})" if threads else NEVER
    open_message = (
        "(NOT m.private AND EXISTS (SELECT 1 FROM threads vt WHERE vt.id = m.thread_id "
        f"AND NOT vt.private AND ({thread_space} OR {party_threads}) "
        f"AND (m.space IS NULL OR m.space = vt.space OR {message_space})))"
    )
    return f" AND ({' OR '.join([*party, open_message])})"
