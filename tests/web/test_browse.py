"""The viewer's store reads (bridge.store.read.browse) on real imported mail, SQLite and PostgreSQL.

Expected sets come from the access rule's own functions
(`visible_thread_ids`, `visible_messages`) and from the mail files read
with the stdlib; never from browse itself.
"""

from __future__ import annotations

import email
import hashlib
from datetime import UTC, datetime
from email import policy

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.store.read import browse
from bridge.store.tables import Message, Thread, ThreadRedirect
from bridge.store.visibility.access import visible_messages, visible_thread_ids
from tests.web.support import ENRON, LKML, MIME, imported, viewer_of

GHOST = LKML.parent / "ghost-root"
WITH_FILE = MIME / "ruby-mail" / "attachment_with_encoded_name.eml"
READERS = [
    "k..allen@enron.com",
    "thomas.moll@sysgo.com",
    "mikey@neuling.org",
    "someone.new@enron.com",
    "outside.analyst@example.org",
    "alice@example.org",
    "nobody@example.net",
]


@pytest.fixture
def store(engine: Engine) -> tuple[Engine, Config]:
    return engine, imported(engine, [ENRON, LKML, GHOST, WITH_FILE])


@pytest.mark.parametrize("address", READERS)
def test_listing_is_exactly_what_the_reader_may_see(
    store: tuple[Engine, Config], address: str
) -> None:
    engine, config = store
    viewer = viewer_of(config, address)
    with Session(engine) as session:
        expected = visible_thread_ids(session, viewer)
        rows, total = browse.thread_summaries(session, viewer, limit=1000)
        assert total == len(expected) == len(rows)
        assert {r.id for r in rows} == expected
        last = [r.last_date for r in rows]
        assert last == sorted(last, key=lambda d: d or datetime.min.replace(tzinfo=UTC))[::-1]
        for row in rows:
            shown = visible_messages(session, viewer, row.id)
            assert row.message_count == len(shown)
            senders = {m.sender_id for m in shown}
            assert len(row.participants) + row.more_participants == len(senders - {None})
        # Pages of two cover the same rows, in the same order, with the same total.
        paged = []
        for offset in range(0, total, 2):
            page, again = browse.thread_summaries(session, viewer, limit=2, offset=offset)
            assert again == total
            paged += page
        assert [r.id for r in paged] == [r.id for r in rows]


def test_counts_and_names_leave_out_hidden_messages(store: tuple[Engine, Config]) -> None:
    """In the private RapidIO thread Michael Neuling sees only the messages he was party to."""
    engine, config = store
    with Session(engine) as session:
        moll = viewer_of(config, "thomas.moll@sysgo.com")
        neuling = viewer_of(config, "mikey@neuling.org")
        (full,), _ = browse.thread_summaries(session, moll, space="rio")
        (part,), _ = browse.thread_summaries(session, neuling, space="rio")
        stored = session.get_one(Thread, full.id).message_count
        assert full.message_count == stored
        assert part.message_count == len(visible_messages(session, neuling, part.id)) < stored


def test_filters(store: tuple[Engine, Config]) -> None:
    engine, config = store
    viewer = viewer_of(config, "k..allen@enron.com")
    with Session(engine) as session:
        everything, _ = browse.thread_summaries(session, viewer)
        subjects = {r.subject: r for r in everything}
        assert set(subjects) == {"Heads up", "RE: West Position"}
        in_trading, n = browse.thread_summaries(session, viewer, space="trading")
        assert n == 1 and in_trading[0].subject == "Heads up"
        by_sender, _ = browse.thread_summaries(
            session, viewer, participant="heather.dunton@enron.com"
        )
        assert [r.subject for r in by_sender] == ["RE: West Position"]
        # Allen only received West Position: as a person he is in it, as a sender he is not.
        assert browse.thread_summaries(session, viewer, participant="k..allen@enron.com")[1] == 0
        mine, _ = browse.thread_summaries(session, viewer, person="K..Allen@enron.com")
        assert [r.subject for r in mine] == ["RE: West Position"]
        assert browse.thread_summaries(session, viewer, person="who@nowhere.example") == ([], 0)
        heads = subjects["Heads up"].last_date
        west = subjects["RE: West Position"].last_date
        assert heads is not None and west is not None and west < heads
        after, _ = browse.thread_summaries(session, viewer, after=heads)
        assert [r.subject for r in after] == ["Heads up"]
        before, _ = browse.thread_summaries(session, viewer, before=heads)
        assert [r.subject for r in before] == ["RE: West Position"]
        assert browse.thread_summaries(session, viewer, has_attachment=True) == ([], 0)


def test_attachment_filter(store: tuple[Engine, Config]) -> None:
    engine, config = store
    message = email.message_from_bytes(WITH_FILE.read_bytes(), policy=policy.default)
    reader = viewer_of(config, str(message["To"].addresses[0].addr_spec))
    with Session(engine) as session:
        rows, total = browse.thread_summaries(session, reader, has_attachment=True)
        assert total == 1 and rows[0].has_attachment


def test_thread_detail_tree_and_hidden_messages(store: tuple[Engine, Config]) -> None:
    engine, config = store
    with Session(engine) as session:
        alice = viewer_of(config, "alice@example.org")
        (row,), _ = browse.thread_summaries(session, alice, person="alice@example.org", limit=1)
        detail = browse.thread_detail(session, alice, row.id)
        assert detail is not None
        pks = [m.pk for m in detail.messages]
        assert sorted(pks) == sorted(m.id for m in visible_messages(session, alice, row.id))
        # Tree order: every message comes after its parent, one level deeper.
        place = {m.pk: i for i, m in enumerate(detail.messages)}
        for m in detail.messages:
            if m.parent_pk is None:
                assert m.depth == 0
            else:
                parent = detail.messages[place[m.parent_pk]]
                assert place[m.parent_pk] < place[m.pk] and m.depth == parent.depth + 1
        # The flat view is by date, and here that differs from the tree.
        flat = detail.by_date()
        dates = [m.date for m in flat]
        assert dates == sorted(dates, key=lambda d: d or datetime.max.replace(tzinfo=UTC))
        assert [m.pk for m in flat] != pks
        # Hidden and missing answer alike.
        nobody = viewer_of(config, "nobody@example.net")
        assert browse.thread_detail(session, nobody, row.id) is None
        assert browse.thread_detail(session, alice, 10_000_000) is None


def test_thread_detail_hangs_replies_under_the_nearest_visible_ancestor(
    store: tuple[Engine, Config],
) -> None:
    engine, config = store
    with Session(engine) as session:
        neuling = viewer_of(config, "mikey@neuling.org")
        (row,), _ = browse.thread_summaries(session, neuling, space="rio")
        detail = browse.thread_detail(session, neuling, row.id)
        assert detail is not None
        shown = {m.pk for m in detail.messages}
        assert all(m.parent_pk is None or m.parent_pk in shown for m in detail.messages)
        assert len(shown) < session.get_one(Thread, row.id).message_count
        bodies = "\n".join(m.new_text + m.quoted_text for m in detail.messages)
        assert bodies.strip()


def test_message_fields(store: tuple[Engine, Config]) -> None:
    engine, config = store
    message = email.message_from_bytes(WITH_FILE.read_bytes(), policy=policy.default)
    reader = viewer_of(config, str(message["To"].addresses[0].addr_spec))
    with Session(engine) as session:
        (row,), _ = browse.thread_summaries(session, reader)
        detail = browse.thread_detail(session, reader, row.id)
        assert detail is not None
        (m,) = detail.messages
        assert m.sender is not None
        assert m.sender.address == message["From"].addresses[0].addr_spec.lower()
        assert [r.address for r in m.to] == [a.addr_spec.lower() for a in message["To"].addresses]
        names = [part.get_filename() for part in message.iter_attachments()]
        assert [a.filename for a in m.attachments] == names
        assert m.subject == message["Subject"]


def test_redirects_and_bad_ids(store: tuple[Engine, Config]) -> None:
    engine, _ = store
    with Session(engine) as session:
        tid = session.execute(select(Thread.id).limit(1)).scalar_one()
        session.add(ThreadRedirect(old_id=900_001, new_id=tid))
        session.flush()
        assert browse.resolve_thread_id(session, tid) == tid
        assert browse.resolve_thread_id(session, 900_001) == tid
        assert browse.resolve_thread_id(session, 900_002) is None
        assert browse.resolve_thread_id(session, 2**40) is None
        assert browse.resolve_thread_id(session, -1) is None


def test_locate_message(store: tuple[Engine, Config]) -> None:
    engine, config = store
    moll = viewer_of(config, "thomas.moll@sysgo.com")
    nobody = viewer_of(config, "nobody@example.net")
    with Session(engine) as session:
        (row,), _ = browse.thread_summaries(session, moll, space="rio")
        first = visible_messages(session, moll, row.id)[0]
        for form in (first.message_id, f"<{first.message_id}>", f"  <{first.message_id}> "):
            assert browse.locate_message(session, moll, form) == (row.id, first.id)
        assert browse.locate_message(session, nobody, first.message_id) is None
        assert browse.locate_message(session, moll, "<no-such@id>") is None
        assert browse.locate_message(session, moll, "") is None


def test_downloads_need_sight(store: tuple[Engine, Config]) -> None:
    engine, config = store
    message = email.message_from_bytes(WITH_FILE.read_bytes(), policy=policy.default)
    reader = viewer_of(config, str(message["To"].addresses[0].addr_spec))
    nobody = viewer_of(config, "nobody@example.net")
    with Session(engine) as session:
        pk, sha = session.execute(
            select(Message.id, Message.raw_sha256).where(Message.has_attachment.is_(True))
        ).one()
        original = browse.original_bytes(session, reader, pk)
        assert original is not None and hashlib.sha256(original).hexdigest() == sha
        # The file is one mbox message: the original is it, without the "From " line.
        assert WITH_FILE.read_bytes().split(b"\n", 1)[1].startswith(original[:200])
        assert browse.original_bytes(session, nobody, pk) is None
        found = browse.attachment_bytes(session, reader, pk, 0)
        assert found is not None
        part = next(iter(message.iter_attachments()))
        assert found == (part.get_filename(), part.get_content_type(), part.get_content())
        assert browse.attachment_bytes(session, nobody, pk, 0) is None
        assert browse.attachment_bytes(session, reader, pk, 99) is None
        assert browse.attachment_bytes(session, reader, pk, -1) is None
