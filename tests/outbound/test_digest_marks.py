"""Follow and mute in digests, on SQLite and PostgreSQL, over real imported mail.

A thread the reader follows (a space's thread they are no party to) comes
first in their digest; one they muted is left out; a follow mark on a thread
they may not see (forced into the store: the viewer refuses to write one)
shows them nothing of it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.ingest.files import run_import
from bridge.store.read import marks
from bridge.store.tables import Message, ThreadMark
from bridge.store.visibility.access import visible_message_ids
from tests.outbound.test_digests import ENRON, ENRON_RUN, LAST_DIGEST, digest_of, load, seed_users
from tests.web.support import viewer_of

MEMBER = "outside.analyst@example.org"  # reads "gas": SoCal is news, West is hidden
NOW = datetime(2026, 12, 6, tzinfo=UTC)


@pytest.fixture
def store(engine: Engine) -> Engine:
    result = run_import(engine, [str(ENRON)], workers=1, rules=load().ruleset)
    assert result.tally.outcomes["quarantined"] == 0
    return engine


def _thread(session: Session, subject: str) -> int:
    return session.execute(
        select(Message.thread_id).where(Message.subject.startswith(subject)).limit(1)
    ).scalar_one()


def _items(session: Session, address: str) -> tuple[list[int], list[int]]:
    _due, content = digest_of(session, load(), address, ENRON_RUN)
    return [i.thread_id for i in content.yours], [i.thread_id for i in content.spaces]


def test_followed_threads_come_first_and_muted_ones_leave(store: Engine) -> None:
    config = load()
    seed_users(store, [MEMBER], LAST_DIGEST)
    viewer = viewer_of(config, MEMBER)
    with Session(store) as session:
        socal = _thread(session, "SoCal")
        yours, spaces = _items(session, MEMBER)
    assert socal in spaces and socal not in yours
    with Session(store) as session, session.begin():
        assert marks.set_watch(session, viewer, socal, marks.FOLLOW, NOW)
    with Session(store) as session:
        yours, spaces = _items(session, MEMBER)
    assert yours[:1] == [socal] and socal not in spaces
    with Session(store) as session, session.begin():
        assert marks.set_watch(session, viewer, socal, marks.MUTE, NOW)
    with Session(store) as session:
        yours, spaces = _items(session, MEMBER)
    assert socal not in yours and socal not in spaces


def test_a_follow_mark_on_a_hidden_thread_shows_nothing(store: Engine) -> None:
    config = load()
    seed_users(store, [MEMBER], LAST_DIGEST)
    viewer = viewer_of(config, MEMBER)
    with Session(store) as session:
        west = _thread(session, "RE: West Position")
        assert visible_message_ids(session, viewer, west) == ()
        before = _items(session, MEMBER)
    with Session(store) as session, session.begin():
        assert not marks.set_watch(session, viewer, west, marks.FOLLOW, NOW)
        session.add(ThreadMark(address=MEMBER, thread_id=west, watch="follow", updated_at=NOW))
    with Session(store) as session:
        after = _items(session, MEMBER)
    assert after == before and west not in after[0] + after[1]
