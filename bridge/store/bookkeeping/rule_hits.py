"""Rule hit counters, kept in the store so they survive restarts and add up across processes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from bridge.store.tables import RuleHit, table


def count(conn: Connection, hits: dict[str, int], now: datetime) -> None:
    """Add `hits` (rule name → copies matched) to the counters, in the caller's transaction."""
    if not hits:
        return
    rules = table(RuleHit)
    for rule, n in sorted(hits.items()):
        done = conn.execute(
            update(rules).where(rules.c.rule == rule).values(hits=rules.c.hits + n, last_hit_at=now)
        )
        if done.rowcount == 0:
            conn.execute(rules.insert(), [{"rule": rule, "hits": n, "last_hit_at": now}])


def counts(conn: Connection) -> dict[str, int]:
    return {rule: hits for rule, hits in conn.execute(select(RuleHit.rule, RuleHit.hits))}
