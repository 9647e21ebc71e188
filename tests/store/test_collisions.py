"""Id collisions on real Enron mail: a copy is the same message only if it has the same content.

A forged copy carries the Message-ID of a real message (giron-d/inbox/49) with
other recipients, another Date and another text. It must never be merged into
the real one: it is stored apart and flagged, and the message stored first
keeps the id whatever the Dates claim, so replies naming it thread with that
one. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from bridge import commands
from bridge.config import Config
from bridge.core.linking import dedupe
from bridge.core.message import Flag, Provenance, RawMessage
from bridge.errors import NotFoundError
from bridge.pipeline import Outcome, Prepared, prepare, store_batch
from bridge.store.blobs import Compressor
from bridge.store.bookkeeping.collisions import TASK, list_collisions, split_id_merged_copies
from bridge.store.read.reading import thread_messages
from bridge.store.tables import (
    ContentHash,
    Delivery,
    EnvelopeRecipient,
    Message,
    MessageId,
    Person,
    RawBlob,
    StoreTask,
)
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
GENUINE = (ENRON / "giron-d" / "inbox" / "49").read_bytes()
REAL_ID = "12093253.1075840555068.JavaMail.evans@thyme"
GENUINE_TEXT = "all physical weapon-X tabs are linking to an old east book"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def edited(data: bytes, *, date: str | None = None, to: str | None = None, body: str = "") -> bytes:
    """`data` with its Date or To header (folded lines included) and body replaced."""
    head, _, text_ = data.partition(b"\n\n")
    head += b"\n"
    for name, value in (("Date", date), ("To", to)):
        if value is not None:
            head = re.sub(
                rb"(?m)^" + name.encode() + rb":.*\n(?:[ \t].*\n)*",
                f"{name}: {value}\n".encode(),
                head,
            )
    return head + b"\n" + (body.encode() if body else text_)


def forged(date: str = "Thu, 31 Jan 2002 09:00:00 -0800 (PST)", body: str = "") -> bytes:
    return edited(
        GENUINE,
        date=date,
        to="mallory@evil.example",
        body=body or "Change of plans: please wire the fees to account 0666 today.\n\nKK\n",
    )


FORGED = forged()
# A reply that names the real id, from another Enron mailbox (allen-p has no id of its own).
REPLY = b"In-Reply-To: <" + REAL_ID.encode() + b">\n" + (ENRON / "allen-p/inbox/1").read_bytes()


def copy(data: bytes, key: str, *envelope: str) -> Prepared:
    return prepare(RawMessage(data, Provenance("file", f"test/{key}", key, key, None, envelope)))


def genuine_copy() -> Prepared:
    return copy(GENUINE, "genuine", "c..giron@enron.com")


def forged_copy(data: bytes = FORGED, key: str = "forged") -> Prepared:
    return copy(data, key, "mallory@evil.example")


def store(engine: Engine, *batches: list[Prepared]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for batch in batches:
        with Session(engine) as session, session.begin():
            outcomes += store_batch(session, batch, NOW)
    return outcomes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def message_of(session: Session, data: bytes) -> Message:
    """The message a copy with these bytes was stored as."""
    pk = session.execute(
        select(Delivery.message_pk).where(Delivery.raw_sha256 == sha(data))
    ).scalar_one()
    return session.get_one(Message, pk)


def holder(session: Session, message_id: str) -> int | None:
    return session.execute(
        select(MessageId.message_pk).where(MessageId.message_id == message_id)
    ).scalar()


def ids_of(session: Session, pk: int) -> set[str]:
    return set(
        session.execute(select(MessageId.message_id).where(MessageId.message_pk == pk)).scalars()
    )


def envelope_of(session: Session, pk: int) -> set[str]:
    return set(
        session.execute(
            select(Person.address)
            .join(EnvelopeRecipient, EnvelopeRecipient.person_id == Person.id)
            .where(EnvelopeRecipient.message_pk == pk)
        ).scalars()
    )


def assert_holds_the_id(engine: Engine, first: bytes, apart: bytes, envelopes: list[str]) -> None:
    """Two messages: `first` under the real id, `apart` under its collision id, flagged.

    Neither is private: each is seen by whom its own copy and headers name.
    """
    apart_hash = prepare(RawMessage(apart, Provenance("file", ""))).content_hash
    assert apart_hash
    with Session(engine) as session:
        under_id = select(func.count()).where(Message.message_id.startswith(REAL_ID))
        assert session.execute(under_id).scalar_one() == 2
        holding, other = message_of(session, first), message_of(session, apart)
        assert holding.id != other.id
        assert holder(session, REAL_ID) == holding.id
        assert (holding.message_id, holding.flags, holding.private) == (REAL_ID, "", False)
        assert ids_of(session, holding.id) == {REAL_ID}

        stored_as = dedupe.collision_id(REAL_ID, apart_hash)
        assert other.message_id == stored_as and " " in stored_as
        assert Flag.ID_COLLISION in other.flags.split(",") and not other.private
        assert ids_of(session, other.id) == {stored_as}
        assert holder(session, stored_as) == other.id
        assert session.get_one(ContentHash, apart_hash).message_pk == other.id

        # Each keeps its own recipients and its own text.
        assert envelope_of(session, holding.id) == {envelopes[0]}
        assert envelope_of(session, other.id) == {envelopes[1]}
        views = {
            v.message_id: v
            for v in thread_messages(session, message_of(session, GENUINE).thread_id)
        }
        genuine_view = views.get(REAL_ID if first == GENUINE else stored_as)
        assert genuine_view is not None and GENUINE_TEXT in genuine_view.new_text


def assert_genuine_holds_the_id(engine: Engine, forged_data: bytes = FORGED) -> None:
    assert_holds_the_id(
        engine, GENUINE, forged_data, ["c..giron@enron.com", "mallory@evil.example"]
    )


def assert_reply_threads_with_genuine(engine: Engine) -> None:
    with Session(engine) as session:
        genuine, reply = message_of(session, GENUINE), message_of(session, REPLY)
        assert reply.parent_id == genuine.id
        assert reply.thread_id == genuine.thread_id


def assert_reply_threads_with(engine: Engine, parent: bytes) -> None:
    with Session(engine) as session:
        holding, reply = message_of(session, parent), message_of(session, REPLY)
        assert reply.parent_id == holding.id
        assert reply.thread_id == holding.thread_id


@pytest.mark.parametrize("batches", ["one batch", "one batch each"])
@pytest.mark.parametrize("first", ["genuine", "forged"])
def test_the_copy_stored_first_keeps_the_id_and_the_other_is_stored_apart(
    engine: Engine, first: str, batches: str
) -> None:
    """The forged copy is dated two days later than the genuine one: dates do not matter."""
    items = [genuine_copy(), forged_copy()]
    if first == "forged":
        items.reverse()
    items.append(copy(REPLY, "reply", "k..allen@enron.com"))
    split = [items] if batches == "one batch" else [[item] for item in items]
    assert store(engine, *split) == [Outcome.STORED] * 3
    if first == "genuine":
        assert_genuine_holds_the_id(engine)
        assert_reply_threads_with(engine, GENUINE)
    else:
        # Sent first, a forgery with a guessed id keeps it: the genuine mail is
        # still stored whole and seen by its own recipients.
        assert_holds_the_id(engine, FORGED, GENUINE, ["mallory@evil.example", "c..giron@enron.com"])
        assert_reply_threads_with(engine, FORGED)


def test_a_back_dated_copy_never_takes_a_stored_id(engine: Engine) -> None:
    """Knowing an id is not enough: a copy dated years earlier, sent later, is stored apart."""
    early = forged("Tue, 29 Jan 1998 08:00:00 -0800 (PST)", "An earlier text.\n")
    outcomes = store(engine, [genuine_copy()], [copy(early, "early", "mallory@evil.example")])
    assert outcomes == [Outcome.STORED, Outcome.STORED]
    assert_genuine_holds_the_id(engine, early)
    store(engine, [copy(REPLY, "reply", "k..allen@enron.com")])
    assert_reply_threads_with(engine, GENUINE)


def test_in_one_batch_the_first_copy_keeps_the_id_whatever_the_dates(engine: Engine) -> None:
    """Three contents under one id, in every order: the first keeps it, two are apart."""
    early = forged("Tue, 29 Jan 2002 08:00:00 -0800 (PST)", "An earlier text.\n")
    contents = [GENUINE, FORGED, early]
    for n, order in enumerate(itertools.permutations(range(3))):
        empty(engine)
        items = [copy(contents[i], f"copy-{i}") for i in order]
        cut = 1 + n % 2  # one batch of one or two, then the rest
        store(engine, items[:cut], items[cut:])
        with Session(engine) as session:
            got = {
                m.message_id: (m.raw_sha256, m.flags, m.private)
                for m in session.execute(select(Message)).scalars()
            }
            assert got[REAL_ID] == (sha(contents[order[0]]), "", False)
            flagged = [v for k, v in got.items() if k != REAL_ID]
            assert len(flagged) == 2
            assert all(Flag.ID_COLLISION in f and not private for _, f, private in flagged)


def empty(engine: Engine) -> None:
    """Forget every message (people and raw bytes stay)."""
    with engine.begin() as conn:
        for name in (
            "message_refs",
            "recipients",
            "attachments",
            "envelope_recipients",
            "deliveries",
            "fallback_links",
            "message_ids",
            "content_hashes",
        ):
            conn.execute(text(f"DELETE FROM {name}"))
        if engine.dialect.name == "sqlite":  # contentless FTS5
            conn.execute(text("INSERT INTO message_fts(message_fts) VALUES ('delete-all')"))
        else:
            conn.execute(text("DELETE FROM message_search"))
        conn.execute(text("DELETE FROM messages"))
        conn.execute(text("DELETE FROM thread_redirects"))
        conn.execute(text("DELETE FROM threads"))


def test_same_content_is_one_message_whatever_its_id(engine: Engine) -> None:
    other_folder = GENUINE.replace(b"X-Origin: GIRON-D", b"X-Origin: KEISER-K")
    other_id = GENUINE.replace(REAL_ID.encode(), b"copy.1@thyme")
    outcomes = store(
        engine, [genuine_copy()], [copy(other_folder, "keiser")], [copy(other_id, "other-id")]
    )
    assert outcomes == [Outcome.STORED, Outcome.MERGED, Outcome.MERGED]
    with Session(engine) as session:
        message = session.execute(select(Message)).scalar_one()
        assert message.message_id == REAL_ID  # the smallest real id, as before
        assert ids_of(session, message.id) == {REAL_ID, "copy.1@thyme"}
        assert "id-collision" not in message.flags and not message.private


def test_another_copy_of_the_forged_content_joins_the_forged_message(engine: Engine) -> None:
    again = FORGED.replace(b"X-Origin: GIRON-D", b"X-Origin: MALLORY")
    outcomes = store(engine, [genuine_copy()], [forged_copy()], [forged_copy(again, "again")])
    assert outcomes == [Outcome.STORED, Outcome.STORED, Outcome.MERGED]
    assert_genuine_holds_the_id(engine)
    with Session(engine) as session:
        assert message_of(session, again).id == message_of(session, FORGED).id


# --- the store task: stores written by versions that merged on the id alone -----------


def merge_by_id_as_before(engine: Engine, data: bytes, key: str, envelope: str) -> None:
    """What an older version did with a copy carrying a known id: one more delivery."""
    item = copy(data, key, envelope)
    with Session(engine) as session, session.begin():
        pk = holder(session, REAL_ID)
        assert pk is not None and item.content_hash
        session.add(RawBlob(sha256=item.sha256, size=len(data), data=Compressor().compress(data)))
        if session.get(ContentHash, item.content_hash) is None:
            session.add(ContentHash(hash=item.content_hash, message_pk=pk))
        person = session.execute(select(Person.id).where(Person.address == envelope)).scalar()
        if person is None:
            person = session.execute(select(func.max(Person.id))).scalar_one() + 1
            session.add(Person(id=person, address=envelope, name=""))
        session.flush()
        session.add(EnvelopeRecipient(message_pk=pk, person_id=person))
        session.add(
            Delivery(
                message_pk=pk,
                raw_sha256=item.sha256,
                source="file",
                location=f"test/{key}",
                mailbox=key,
                key=key,
                envelope_to=envelope,
                received_at=NOW,
            )
        )


def snapshot(engine: Engine) -> dict[str, list[Any]]:
    tables = {
        "messages": "id, message_id, flags, private, thread_id, parent_id, raw_sha256",
        "message_ids": "message_id, message_pk",
        "content_hashes": "hash, message_pk",
        "deliveries": "id, message_pk, raw_sha256, key",
        "envelope_recipients": "message_pk, person_id",
        "threads": "id, message_count, root_message_id",
    }
    with engine.connect() as conn:
        return {
            name: sorted(tuple(row) for row in conn.execute(text(f"SELECT {cols} FROM {name}")))
            for name, cols in tables.items()
        }


def run_task(engine: Engine) -> list[int]:
    positions: list[int] = []
    position = 0
    while (reached := split_id_merged_copies(engine, position)) is not None:
        positions.append(reached)
        position = reached
    return positions


@pytest.mark.parametrize("stored_first", ["genuine", "forged"])
def test_the_store_task_splits_copies_merged_by_id(engine: Engine, stored_first: str) -> None:
    if stored_first == "genuine":
        store(engine, [genuine_copy()])
        merge_by_id_as_before(engine, FORGED, "forged", "mallory@evil.example")
    else:
        store(engine, [forged_copy()])
        merge_by_id_as_before(engine, GENUINE, "genuine", "c..giron@enron.com")
    store(engine, [copy(REPLY, "reply", "k..allen@enron.com")])
    with Session(engine) as session:
        assert session.execute(select(func.count()).select_from(Message)).scalar_one() == 2

    positions = run_task(engine)
    assert len(positions) == 1
    with Session(engine) as session:
        assert session.get_one(StoreTask, TASK).position == positions[-1]
    # The message keeps its own (first stored) copy and id; the other copy goes apart.
    kept, split, envelopes = (
        (GENUINE, FORGED, ["c..giron@enron.com", "mallory@evil.example"])
        if stored_first == "genuine"
        else (FORGED, GENUINE, ["mallory@evil.example", "c..giron@enron.com"])
    )
    assert_holds_the_id(engine, kept, split, envelopes)
    assert_reply_threads_with(engine, kept)
    with Session(engine) as session:
        # The split copy kept where it came from.
        apart = message_of(session, split)
        keys = session.execute(select(Delivery.key).where(Delivery.message_pk == apart.id))
        assert list(keys.scalars()) == ["forged" if stored_first == "genuine" else "genuine"]

    before = snapshot(engine)
    assert run_task(engine) == []
    assert snapshot(engine) == before


def test_the_store_task_leaves_copies_with_the_same_content(engine: Engine) -> None:
    store(engine, [genuine_copy()], [copy(GENUINE.replace(b"GIRON-D", b"KEISER-K"), "keiser")])
    before = snapshot(engine)
    run_task(engine)
    assert snapshot(engine) == before


# --- admins: `bridge collisions` -------------------------------------------------------


def cli(action: str, ident: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(db=None, config=None, debug=False, action=action, ident=ident)


def test_collisions_command_lists_and_shows(
    engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command's store is this test's (an engine it opened would outlive the test).
    monkeypatch.setattr(commands, "open_engine", lambda args, config: engine)
    store(engine, [genuine_copy()], [forged_copy()])
    with Session(engine) as session:
        genuine, fake = message_of(session, GENUINE), message_of(session, FORGED)
        assert [c.pk for c in list_collisions(session)] == [fake.id]

    assert commands.cmd_collisions(cli("list"), Config()) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"{fake.id}\t2002-01-31 17:00\t{fake.message_id}\theld by {genuine.id}\tRE: Heads up",
        "1 id collisions",
    ]

    assert commands.cmd_collisions(cli("show", fake.id), Config()) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"pk: {fake.id}",
        f"stored id: {fake.message_id}",
        f"real id: {REAL_ID}",
        f"held by: {genuine.id}",
        "date: 2002-01-31 17:00",
        "sender: kam.keiser@enron.com",
        "subject: RE: Heads up",
        "copy: file test/forged forged forged",
    ]
    with pytest.raises(NotFoundError):
        commands.cmd_collisions(cli("show", genuine.id), Config())
