"""Threads do not depend on arrival order or batch boundaries.

The same real messages (Enron copies without threading headers, two R-devel
pipermail months with them) are stored through the real pipeline in shuffled
orders and random batch splits, each batch its own committed transaction in a
fresh database; the partition into threads and every message's parent must
equal those of an import in file order.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bridge.core.message import RawMessage
from bridge.ingest.sources import discover, read_items
from bridge.pipeline import Prepared, prepare, store_batch
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from tests.conftest import DATA

SOURCES = [
    DATA / "enron" / "maildir",
    DATA / "rlists" / "r-devel-1998-December.txt",
    DATA / "rlists" / "r-devel-2020-November.txt",
]
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)

Threads = frozenset[frozenset[str]]
Parents = dict[str, str | None]


@cache
def prepared() -> tuple[Prepared, ...]:
    """Every message of the sources in file order, through the pure pipeline stages."""
    raws: list[RawMessage] = [
        item.raw
        for found in discover([str(p) for p in SOURCES])
        for item in read_items(found)
        if item.raw is not None
    ]
    return tuple(prepare(raw) for raw in raws)


def store(engine: Engine, batches: list[list[Prepared]]) -> None:
    for batch in batches:
        with Session(engine) as session, session.begin():
            store_batch(session, batch, NOW)


def threads_and_parents(engine: Engine) -> tuple[Threads, Parents]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.message_id, m.thread_id, p.message_id FROM messages m"
                " LEFT JOIN messages p ON p.id = m.parent_id"
            )
        ).all()
    groups: dict[int, set[str]] = {}
    for message_id, thread, _parent in rows:
        groups.setdefault(thread, set()).add(message_id)
    threads = frozenset(frozenset(group) for group in groups.values())
    return threads, {message_id: parent for message_id, _thread, parent in rows}


def test_threads_and_parents_do_not_depend_on_order_or_batches(sqlite_engine: Engine) -> None:
    items = prepared()
    store(sqlite_engine, [list(items)])
    want_threads, want_parents = threads_and_parents(sqlite_engine)
    # The reference is not trivial: header threads, fallback-linked Enron
    # copies and single messages are all there.
    sizes = sorted(len(t) for t in want_threads)
    assert len(want_parents) > 80 and sizes[-1] >= 8 and sizes[0] == 1
    assert sum(parent is not None for parent in want_parents.values()) > 30

    @settings(max_examples=50, deadline=None)
    @given(
        order=st.permutations(range(len(items))),
        cuts=st.lists(st.integers(1, len(items) - 1), max_size=8, unique=True),
    )
    def check(order: list[int], cuts: list[int]) -> None:
        shuffled = [items[i] for i in order]
        bounds = [0, *sorted(cuts), len(shuffled)]
        batches = [shuffled[a:b] for a, b in pairwise(bounds)]
        with tempfile.TemporaryDirectory(prefix="bridge-order-") as folder:
            engine = make_engine(str(Path(folder) / "bridge.db"))
            try:
                upgrade(engine)
                store(engine, batches)
                got_threads, got_parents = threads_and_parents(engine)
            finally:
                engine.dispose()
        assert got_threads == want_threads
        assert got_parents == want_parents

    check()
