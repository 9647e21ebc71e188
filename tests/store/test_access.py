"""Who sees which message, and so which thread, on real imported mail, on SQLite and PostgreSQL.

Enron's maildir gives four threads (West Position, a spam mail, SoCal Gas and
the reply-all "Heads up"); the notmuch lkml files give a RapidIO thread held
together by References, in which rules make Michael Neuling's messages
private. Expected message sets come from the files' own headers (stdlib
email), not from the store.
"""

from __future__ import annotations

import email
import tomllib
from datetime import UTC, datetime
from email.utils import getaddresses
from pathlib import Path

import pytest
from sqlalchemy import Engine, String, cast, select, update
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.config import parse_config
from bridge.core.access import Viewer, viewer_for
from bridge.core.message import Provenance, RawMessage
from bridge.core.normalize import normalize_message_id
from bridge.ingest.files import run_import
from bridge.store.read import marks
from bridge.store.read.reading import find_message, find_thread_id, raw_bytes
from bridge.store.tables import Message, Thread
from bridge.store.visibility.access import (
    person_id,
    visible_message_ids,
    visible_messages,
    visible_thread_ids,
)
from tests.access_setup import SPACES_AND_RULES
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
LKML = DATA / "threads" / "notmuch" / "lkml"
STAFF = ("enron.com",)

CONFIG = SPACES_AND_RULES

AUDITOR = "Auditor@Example.NET"  # given as an envelope recipient of the spam copy


def file_id(path: Path) -> str:
    value = normalize_message_id(email.message_from_bytes(path.read_bytes())["Message-ID"])
    assert value
    return value


def header_parties(path: Path) -> set[str]:
    return named_in(path.read_bytes())


def named_in(data: bytes) -> set[str]:
    """From, To and Cc of the bytes, read with the standard library.

    Leading blank lines are skipped, as Bridge's parser does (one Enron file has one).
    """
    message = email.message_from_bytes(data.lstrip(b"\r\n"))
    fields = [v for name in ("From", "To", "Cc") for v in message.get_all(name, [])]
    return {addr.lower() for _, addr in getaddresses(fields) if addr}


def by_subject(session: Session, start: str) -> Message:
    """Enron's maildir files carry no Message-ID: find a thread's first message by subject."""
    query = select(Message).where(Message.subject.startswith(start)).order_by(Message.sort_date)
    return session.execute(query.limit(1)).scalar_one()


@pytest.fixture
def store(engine: Engine) -> Engine:
    config = parse_config(tomllib.loads(CONFIG), "bridge.toml")
    result = run_import(engine, [str(ENRON), str(LKML)], workers=1, rules=config.ruleset)
    assert result.tally.outcomes["quarantined"] == 0
    with Session(engine) as session:
        spam = by_subject(session, "PHILLIP, You've been selected")
        raw = raw_bytes(session, spam.raw_sha256)
    # The same spam delivered again over SMTP to one more envelope recipient:
    # the copy merges into the stored message and makes the auditor a party.
    copy = RawMessage(raw, Provenance("smtp", "test", key="smtp-copy", envelope_to=(AUDITOR,)))
    outcome = pipeline.store_alone(
        engine, pipeline.prepare(copy, rules=config.ruleset), datetime.now(UTC), pipeline.Tally()
    )
    assert outcome is pipeline.Outcome.MERGED
    return engine


def viewer(address: str) -> Viewer:
    config = parse_config(tomllib.loads(CONFIG), "bridge.toml")
    return viewer_for(address, config.spaces, STAFF)


def threads(session: Session) -> dict[str, int]:
    return {
        "west": by_subject(session, "RE: West Position").thread_id,
        "spam": by_subject(session, "PHILLIP, You've been selected").thread_id,
        "socal": by_subject(session, "SoCal Gas CPUC").thread_id,
        "heads": by_subject(session, "Heads up").thread_id,
        "rio": find_thread_id(session, file_id(LKML / "1382298770.004581.eml")),
    }


MATRIX = {
    "heather.dunton@enron.com": {"west", "heads"},  # From on West; staff
    "k..allen@enron.com": {"west", "heads"},  # To on West; staff
    "pallen@enron.com": {"spam", "heads"},  # To on the spam; staff
    AUDITOR: {"spam"},  # an envelope recipient only
    "outside.analyst@example.org": {"socal"},  # gas member, not staff, West is private
    "someone.new@enron.com": {"heads"},  # staff only: the staff-open space
    "thomas.moll@sysgo.com": {"rio"},  # Cc on the private RapidIO thread
    "observer@example.org": set(),  # rio member, but rio is private and he was no party
    "nobody@example.net": set(),  # an outsider sees nothing
}


def expected_messages(session: Session, who: Viewer) -> set[int]:
    """The rule applied to each message's own bytes, the copies' envelopes and its space."""
    found = set()
    for message in session.execute(select(Message)).scalars():
        named = named_in(raw_bytes(session, message.raw_sha256))
        holders = {AUDITOR.lower()} if message.subject.startswith("PHILLIP, You") else set()
        in_space = message.space in who.spaces and not message.private
        if who.address in named | holders or in_space:
            found.add(message.id)
    return found


@pytest.mark.parametrize("address", sorted(MATRIX))
def test_who_sees_which_message(store: Engine, address: str) -> None:
    with Session(store) as session:
        named = threads(session)
        assert len(set(named.values())) == len(named)
        who = viewer(address)
        expected = expected_messages(session, who)
        seen = visible_thread_ids(session, who)
        assert {name for name, tid in named.items() if tid in seen} == MATRIX[address]
        thread_of = dict(session.execute(select(Message.id, Message.thread_id)).all())
        assert seen == {thread_of[pk] for pk in expected}
        shown: set[int] = set()
        for tid in session.execute(select(Thread.id)).scalars():
            shown.update(m.id for m in visible_messages(session, who, tid))
        assert shown == expected
        assert visible_thread_ids(session, who, [named["west"], named["heads"]]) == (
            seen & {named["west"], named["heads"]}
        )


def test_outsider_gets_exactly_what_a_missing_thread_gets(store: Engine) -> None:
    with Session(store) as session:
        nobody = viewer("nobody@example.net")
        missing = max(session.execute(select(Thread.id)).scalars()) + 1000
        assert visible_messages(session, nobody, missing) == []
        for tid in threads(session).values():
            assert visible_messages(session, nobody, tid) == []
        assert visible_thread_ids(session, nobody, [missing]) == set()


def test_a_private_thread_shows_a_party_only_the_messages_they_were_party_to(
    store: Engine,
) -> None:
    files = sorted(LKML.glob("*.eml"))
    with Session(store) as session:
        rio = threads(session)["rio"]
        in_rio = {
            f: find_message(session, file_id(f))
            for f in files
            if find_message(session, file_id(f)).thread_id == rio
        }
        assert session.get(Thread, rio).private  # type: ignore[union-attr]
        neuling = [f for f, m in in_rio.items() if m.private]
        assert neuling  # the rule made some messages private, the thread with them
        for address in ("timur.tabi@gmail.com", "mporter@kernel.crashing.org"):
            shown = {m.id for m in visible_messages(session, viewer(address), rio)}
            expected = {m.id for f, m in in_rio.items() if address in header_parties(f)}
            assert shown == expected
            assert shown != {m.id for m in in_rio.values()}  # something stays hidden


def test_references_to_a_hidden_message_do_not_reveal_it(store: Engine) -> None:
    """r58472 joined late: the replies he got name Neuling's private mail in References."""
    with Session(store) as session:
        rio = threads(session)["rio"]
        shown = visible_messages(session, viewer("r58472@freescale.com"), rio)
        assert len(shown) == 3
        shown_ids = {m.id for m in shown}
        named = {
            find_message(session, ref).id
            for m in shown
            for ref in m.references.split("\n")
            if ref and ref in known_ids(session)
        }
        hidden = named - shown_ids
        assert hidden  # known Message-IDs, in the same thread, not shown
        rows = [session.get(Message, pk) for pk in hidden]
        assert all(m is not None and m.thread_id == rio for m in rows)
        # Among them Neuling's own private reply, the one the rule hid.
        assert any(m is not None and m.private for m in rows)


def known_ids(session: Session) -> set[str]:
    return set(session.execute(select(Message.message_id)).scalars())


@pytest.mark.parametrize("address", sorted(MATRIX))
def test_the_lean_id_reader_agrees_with_visible_messages(store: Engine, address: str) -> None:
    who = viewer(address)
    with Session(store) as session:
        for tid in session.execute(select(Thread.id)).scalars():
            lean = visible_message_ids(session, who, tid)
            assert lean == tuple(m.id for m in visible_messages(session, who, tid)), tid


def test_new_mail_shows_at_once_to_the_people_it_names(store: Engine) -> None:
    newcomer = viewer("newcomer@example.org")
    with Session(store) as session:
        assert visible_thread_ids(session, newcomer) == set()
    data = (
        b"From: Phillip Allen <pallen@enron.com>\r\nTo: newcomer@example.org\r\n"
        b"Subject: Welcome\r\nMessage-ID: <welcome.1@enron.com>\r\n"
        b"Date: Mon, 3 Dec 2001 09:00:00 -0600\r\n\r\nWelcome aboard.\r\n"
    )
    raw = RawMessage(data, Provenance("smtp", "test", key="welcome-1"))
    outcome = pipeline.store_alone(
        store, pipeline.prepare(raw), datetime.now(UTC), pipeline.Tally()
    )
    assert outcome is pipeline.Outcome.STORED
    with Session(store) as session:
        welcome = find_thread_id(session, "welcome.1@enron.com")
        assert visible_thread_ids(session, newcomer) == {welcome}


@pytest.mark.parametrize("address", sorted(MATRIX))
def test_unread_counts_and_tags_come_from_visible_messages_only(
    store: Engine, address: str
) -> None:
    """Every message gets a tag of its own: a reader is shown exactly the tags, and
    counted exactly the unread messages, of the messages the rule lets them see."""
    with Session(store) as session, session.begin():
        session.execute(update(Message).values(tags="t" + cast(Message.id, String)))
    with Session(store) as session:
        who = viewer(address)
        expected = expected_messages(session, who)
        rows = session.execute(select(Message.id, Message.thread_id, Message.sender_id)).all()
        me = person_id(session, address)
        states = marks.thread_states(session, who, [tid for _pk, tid, _s in rows])
        assert set(states) == {tid for pk, tid, _s in rows if pk in expected}
        for tid, state in states.items():
            mine = {pk for pk, t, _s in rows if t == tid and pk in expected}
            assert set(state.tags) == {f"t{pk}" for pk in mine}
            unread = {pk for pk, t, s in rows if t == tid and pk in expected and s != me}
            assert set(state.unread_pks) == unread and state.unread == len(unread)
