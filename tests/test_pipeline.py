"""Every input through the whole pipeline: stored with what can be recovered, or quarantined."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.core.message import Provenance, RawMessage
from bridge.ingest.files import run_import
from bridge.store.read.reading import find_thread_id, raw_bytes, thread_messages
from bridge.store.tables import Delivery, Message, Quarantined
from tests.conftest import DATA

MIME = DATA / "mime"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
FIXTURES = sorted(p for p in MIME.rglob("*") if p.is_file() and p.suffix not in (".json", ".md"))
SEEDS = FIXTURES + sorted(p for p in (DATA / "enron" / "maildir").rglob("*") if p.is_file())
_keys = itertools.count()


def test_every_mime_fixture_is_stored_or_quarantined_with_a_reason(engine: Engine) -> None:
    fixtures = FIXTURES
    result = run_import(engine, [str(p) for p in fixtures], workers=1)
    assert result.tally.read >= len(fixtures)
    with Session(engine) as session:
        stored = set(session.execute(select(Delivery.location)).scalars())
        held = {row.location: row.reason for row in session.execute(select(Quarantined)).scalars()}
        for path in fixtures:
            where = str(path.resolve())
            assert (where in stored) != (where in held), path.name
            assert held.get(where, "") not in ("store-failed", "parse-failed", "split-failed")
        for message in session.execute(select(Message)).scalars():
            views = thread_messages(session, find_thread_id(session, message.message_id))
            for view in views:
                for text in (view.subject, view.new_text, view.quoted_text, view.signature):
                    assert "\x00" not in text
                    text.encode("utf-8")  # no lone surrogates


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real message with bytes flipped, cut, duplicated or spliced in."""
    data = bytearray(draw(st.sampled_from(SEEDS)).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "dup", "splice"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "dup":
            end = min(len(data), at + draw(st.integers(1, 400)))
            data[at:at] = data[at:end] * draw(st.integers(1, 20))
        else:
            data[at:at] = draw(
                st.sampled_from(
                    [b"\x00", b"\r", b"=?utf-8?q?=FF=?=", b"\n--b\n", b"Subject: \xff\xfe\n"]
                )
            )
    return bytes(data)


def _accept(engine: Engine, data: bytes) -> pipeline.Outcome:
    key = f"hypothesis:{next(_keys)}"
    raw = RawMessage(data, Provenance("file", "hypothesis", "fuzz", key))
    item = pipeline.prepare(raw)
    with Session(engine) as session, session.begin():
        outcome = pipeline.store_batch(session, [item], NOW)[0]
    with Session(engine) as session:
        sha = (
            session.execute(select(Delivery.raw_sha256).where(Delivery.key == key)).scalar()
            or session.execute(
                select(Quarantined.raw_sha256).where(Quarantined.key == key)
            ).scalar()
        )
        assert sha is not None, "the bytes were lost"
        assert raw_bytes(session, sha) == data
        if outcome is pipeline.Outcome.QUARANTINED:
            reason = session.execute(
                select(Quarantined.reason).where(Quarantined.key == key)
            ).scalar_one()
            assert reason not in ("store-failed", "parse-failed", "split-failed")
        else:
            pk = session.execute(
                select(Delivery.message_pk).where(Delivery.key == key)
            ).scalar_one()
            message = session.get_one(Message, pk)
            thread_messages(session, message.thread_id)
    return outcome


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.one_of(mutated(), st.binary(max_size=3000)))
def test_mutated_real_messages_and_random_bytes_never_break_the_store(
    engine: Engine, data: bytes
) -> None:
    assert _accept(engine, data) in set(pipeline.Outcome)


def test_same_bytes_from_two_sources_is_one_message_two_deliveries(engine: Engine) -> None:
    data = (DATA / "enron" / "maildir" / "giron-d" / "inbox" / "49").read_bytes()
    assert _accept(engine, data) is pipeline.Outcome.STORED
    assert _accept(engine, data) is pipeline.Outcome.MERGED
    with Session(engine) as session:
        assert len(session.execute(select(Delivery)).all()) == 2
        assert len(session.execute(select(Message)).all()) == 1
