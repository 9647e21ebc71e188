"""The access rule as SQL over `messages m`, for the search backends' WHERE clauses.

Search must filter before it ranks and cuts: a reader who may see few
messages must still find them among a common word's many matches, and counts
must cover only what they may see. This is `bridge.core.access` written for
the backends' raw SQL; tests check it against `bridge.store.visibility.access`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bridge.core.access import Viewer
from bridge.store.visibility.access import person_id

NEVER = "1=0"


def viewer_clause(session: Session, viewer: Viewer, params: dict[str, Any]) -> str:
    """` AND (…)` keeping the messages `viewer` may see; adds its values to `params`.

    A message is seen when a copy was delivered to the viewer, when its From,
    To or Cc names them, or when it is in a space they read and not private.
    """
    pid = person_id(session, viewer.address)
    arms: list[str] = []
    if pid is not None:
        arms.append(
            "EXISTS (SELECT 1 FROM envelope_recipients ve WHERE ve.message_pk = m.id "
            f"AND ve.person_id = {int(pid)})"
        )
        arms.append(f"m.sender_id = {int(pid)}")
        arms.append(
            "EXISTS (SELECT 1 FROM recipients vr WHERE vr.message_pk = m.id "
            f"AND vr.person_id = {int(pid)} AND vr.kind IN ('to', 'cc'))"
        )
    spaces = sorted(viewer.spaces)
    if spaces:
        for i, slug in enumerate(spaces):
            params[f"v_space{i}"] = slug
        listed = ",".join(f":v_space{i}" for i in range(len(spaces)))
        arms.append(f"(m.space IN ({listed}) AND NOT m.private)")
    return f" AND ({' OR '.join(arms) if arms else NEVER})"
