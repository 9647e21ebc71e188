"""The reader's marks in the store, on SQLite and PostgreSQL: unread, follow, mute, tags.

Real mail through the real import; every count and tag is checked against
what the access rule lets the reader see: a reply hidden from them never
moves their count, never lends its tag, and following a thread they cannot
see writes nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.search import search
from bridge.store.read import browse, marks
from bridge.store.read.export import export_rows
from bridge.store.tables import Message, ReaderMark, ThreadMark
from bridge.store.visibility.access import person_id, visible_message_ids
from tests.marks_setup import MARKS_CONFIG, OTHER, OUTSIDER, PARTY, deliver, root_thread
from tests.web.support import ENRON, LKML, config_from, imported, thread_id, viewer_of

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CONFIG = config_from(MARKS_CONFIG)


@pytest.fixture
def store(engine: Engine) -> Engine:
    imported(engine, [ENRON, LKML], MARKS_CONFIG)
    return engine


def state_of(engine: Engine, address: str, tid: int) -> marks.ThreadState | None:
    viewer = viewer_of(CONFIG, address)
    with Session(engine) as session:
        return marks.thread_states(session, viewer, [tid]).get(tid)


def read_all(engine: Engine, address: str, tid: int) -> None:
    state = state_of(engine, address, tid)
    assert state is not None
    with Session(engine) as session, session.begin():
        marks.mark_read(session, address, tid, state.newest, NOW)


def test_unread_counts_only_visible_messages_and_never_a_hidden_tag(store: Engine) -> None:
    config = CONFIG
    tid = root_thread(store)
    first = state_of(store, PARTY, tid)
    assert first is not None
    with Session(store) as session:
        seen = visible_message_ids(session, viewer_of(config, PARTY), tid)
        own = session.execute(
            select(func.count())
            .select_from(Message)
            .where(Message.id.in_(seen), Message.sender_id == person_id(session, PARTY))
        ).scalar_one()
    # Never opened: every message they may see and did not write is unread.
    assert first.unread == len(seen) - own > 0
    assert set(first.unread_pks) <= set(seen)
    read_all(store, PARTY, tid)
    assert state_of(store, PARTY, tid) == marks.ThreadState(
        unread=0, tags=first.tags, newest=first.newest, read_upto=first.newest
    )
    hidden = deliver(store, config, 1, OTHER, "hushhush")
    visible = deliver(store, config, 2, PARTY, "visible news")
    after = state_of(store, PARTY, tid)
    assert after is not None
    assert (after.unread, after.unread_pks) == (1, (visible,))
    assert "news" in after.tags and "hush" not in after.tags
    # The one it was sent to sees it, and its tag.
    theirs = state_of(store, OTHER, tid)
    assert theirs is not None and hidden in theirs.unread_pks and "hush" in theirs.tags
    assert visible not in theirs.unread_pks and "news" not in theirs.tags
    # An outsider is told nothing at all.
    assert state_of(store, OUTSIDER, tid) is None


def test_marks_never_go_back_and_mark_all_read_covers_every_thread(store: Engine) -> None:
    config = CONFIG
    tid = root_thread(store)
    read_all(store, PARTY, tid)
    newest = state_of(store, PARTY, tid).newest  # type: ignore[union-attr]
    with Session(store) as session, session.begin():
        assert not marks.mark_read(session, PARTY, tid, newest - 1, NOW)
        assert not marks.mark_read(session, PARTY, tid, newest, NOW)
    deliver(store, config, 3, PARTY, "visible news")
    assert state_of(store, PARTY, tid).unread == 1  # type: ignore[union-attr]
    heads = thread_id(store, "Heads up")
    staff = "k..allen@enron.com"
    assert state_of(store, staff, heads).unread > 0  # type: ignore[union-attr]
    with Session(store) as session, session.begin():
        before = marks.version(session, staff)
        assert marks.mark_all_read(session, viewer_of(config, staff), NOW) > 0
        assert marks.mark_all_read(session, viewer_of(config, PARTY), NOW) > 0
    with Session(store) as session:
        assert marks.version(session, staff) == before + 1
    assert state_of(store, staff, heads).unread == 0  # type: ignore[union-attr]
    assert state_of(store, PARTY, tid).unread == 0  # type: ignore[union-attr]
    # What arrives after "mark all read" is unread again.
    deliver(store, config, 4, PARTY, "visible news")
    assert state_of(store, PARTY, tid).unread == 1  # type: ignore[union-attr]


def test_following_a_hidden_or_missing_thread_writes_nothing(store: Engine) -> None:
    config = CONFIG
    tid = root_thread(store)
    outsider = viewer_of(config, OUTSIDER)
    with Session(store) as session, session.begin():
        assert not marks.set_watch(session, outsider, tid, marks.FOLLOW, NOW)
        assert not marks.set_watch(session, outsider, 999_999, marks.MUTE, NOW)
        assert not marks.set_watch(session, outsider, 2**40, marks.MUTE, NOW)
    with Session(store) as session:
        assert session.execute(select(func.count()).select_from(ThreadMark)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(ReaderMark)).scalar_one() == 0
    with pytest.raises(ValueError, match="watch has value"), Session(store) as session:
        marks.set_watch(session, viewer_of(config, PARTY), tid, "star", NOW)


def test_muted_threads_leave_the_lists_and_followed_ones_say_so(store: Engine) -> None:
    config = CONFIG
    staff = viewer_of(config, "k..allen@enron.com")
    heads = thread_id(store, "Heads up")
    with Session(store) as session:
        rows, total = browse.thread_summaries(session, staff, muted=False, limit=1000)
        assert heads in {r.id for r in rows}
    with Session(store) as session, session.begin():
        assert marks.set_watch(session, staff, heads, marks.MUTE, NOW)
    with Session(store) as session:
        kept, kept_total = browse.thread_summaries(session, staff, muted=False, limit=1000)
        assert heads not in {r.id for r in kept} and kept_total == total - 1
        only, only_total = browse.thread_summaries(session, staff, muted=True, limit=1000)
        assert [r.id for r in only] == [heads] and only_total == 1
        assert only[0].watch == marks.MUTE
        assert marks.watches(session, [staff.address]) == {staff.address: {heads: marks.MUTE}}
        # Another reader's lists do not change.
        other = viewer_of(config, "someone.new@enron.com")
        theirs, _ = browse.thread_summaries(session, other, muted=False, limit=1000)
        assert heads in {r.id for r in theirs}
    with Session(store) as session, session.begin():
        assert marks.set_watch(session, staff, heads, marks.FOLLOW, NOW)
    with Session(store) as session:
        rows, _ = browse.thread_summaries(session, staff, muted=False, limit=1000)
        assert next(r for r in rows if r.id == heads).watch == marks.FOLLOW


def test_space_lists_filter_by_tag_over_visible_messages(store: Engine) -> None:
    config = CONFIG
    member = viewer_of(config, "outside.analyst@example.org")  # reads "gas"
    socal = thread_id(store, "SoCal")
    with Session(store) as session:
        rows, total = browse.thread_summaries(session, member, space="gas", tag="pipeline")
        assert [r.id for r in rows] == [socal] and total == 1
        assert rows[0].tags == ("Pipeline",)
        none, zero = browse.thread_summaries(session, member, space="gas", tag="pipe")
        assert (none, zero) == ([], 0)
        # LIKE's wildcards in a tag are plain letters.
        assert browse.thread_summaries(session, member, space="gas", tag="%")[1] == 0
        assert browse.thread_summaries(session, member, space="gas", tag="_ipeline")[1] == 0


def test_tag_in_the_query_language_sees_only_visible_messages(store: Engine) -> None:
    config = CONFIG
    tid = root_thread(store)
    deliver(store, config, 5, OTHER, "hushhush")
    with Session(store) as session:
        mine = search(session, "tag:hush", viewer=viewer_of(config, OTHER))
        assert [h.thread_id for h in mine.hits] == [tid]
        assert search(session, "tag:hush", viewer=viewer_of(config, PARTY)).total_threads == 0
        assert search(session, "tag:HUSH hushhush", viewer=viewer_of(config, OTHER)).hits
        member = viewer_of(config, "outside.analyst@example.org")
        found = search(session, "tag:Pipeline", viewer=member)
        assert {h.thread_id for h in found.hits} == {thread_id(store, "SoCal")}
        assert search(session, "tag:pipe", viewer=member).total_threads == 0


def test_the_export_carries_each_messages_own_tags(store: Engine) -> None:
    config = CONFIG
    deliver(store, config, 6, OTHER, "hushhush")
    with Session(store) as session:
        rows = list(export_rows(session, viewer_of(config, PARTY)))
        assert rows and all("tags" in row for row in rows)
        assert not any("hush" in row["tags"] for row in rows)
        theirs = list(export_rows(session, viewer_of(config, OTHER)))
        hushed = [r for r in theirs if r["message_id"] == "marks-test-6@example.com"]
        assert [r["tags"] for r in hushed] == [["hush"]]
        json.dumps(theirs)  # JSONL: every row is plain JSON
        everything = list(export_rows(session))
        assert any(r["tags"] == ["Pipeline"] for r in everything)
