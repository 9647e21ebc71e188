"""Oversize values that SQLite takes and PostgreSQL refuses are stored, cut the same way, on both.

PostgreSQL refuses a `varchar(n)` value over n characters and a btree index
entry over about 2.7 KB; before the bounds, such mail was acknowledged and
then failed to store (and failed again on `quarantine retry`). Here each kind
arrives twice: both copies must be stored, the second must find the rows the
first made (the people row of a 400-character address, the subject key of a
6 KB subject), and the stored values must be those `core.bounds` gives.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.core.mail.bounds import ADDRESS, CONTENT_ID, CONTENT_TYPE, LIST_ID, SUBJECT_KEY, bounded
from bridge.core.message import Provenance, RawMessage
from bridge.pipeline import Outcome, prepare, store_batch
from bridge.store.tables import Attachment, Message, Person

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
LONG_SENDER = "a" * 390 + "@example.com"
LONG_RCPT = "r" * 400 + "@example.com"
SUBJECT = "Überprüfung " + "éàü" * 1000  # 3,012 characters, over 6 KB in UTF-8
LIST = "x" * 300 + ".lists.example.com"
CONTENT_TYPE_VALUE = "application/x-" + "y" * 300
CID = "z" * 480 + "@example.com"


def message(n: int) -> bytes:
    lines = [
        f"Message-ID: <bounds-{n}@example.com>",
        f"From: Long Sender <{LONG_SENDER}>",
        "To: alice@example.com",
        f"Subject: {'Re: ' if n else ''}{SUBJECT}",
        f"List-Id: Long list <{LIST}>",
        f"Date: Mon, 2 Mar 2026 10:0{n}:00 +0000",
        *(["In-Reply-To: <bounds-0@example.com>"] if n else []),
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Nachricht {n}",
        "--b",
        f"Content-Type: {CONTENT_TYPE_VALUE}",
        f"Content-ID: <{CID}>",
        'Content-Disposition: attachment; filename="data.bin"',
        "",
        "payload",
        "--b--",
        "",
    ]
    return "\r\n".join(lines).encode()


def test_oversize_values_are_stored_cut_the_same_way(engine: Engine) -> None:
    outcomes = []
    for n in range(2):
        provenance = Provenance("smtp", "test", key=f"bounds-{n}", envelope_to=(LONG_RCPT,))
        item = prepare(RawMessage(message(n), provenance))
        assert item.failure is None
        with Session(engine) as session, session.begin():
            outcomes += store_batch(session, [item], NOW)
    assert outcomes == [Outcome.STORED, Outcome.STORED]

    with Session(engine) as session:
        rows = session.execute(select(Message).order_by(Message.id)).scalars().all()
        assert [m.subject for m in rows] == [SUBJECT, "Re: " + SUBJECT]  # shown whole
        key = bounded(SUBJECT.casefold(), SUBJECT_KEY)
        assert [m.subject_norm for m in rows] == [key, key]
        assert len(key) == SUBJECT_KEY and len(key.encode()) < 2700
        assert {m.list_id for m in rows} == {bounded(LIST, LIST_ID)}
        assert rows[1].thread_id == rows[0].thread_id

        people = session.execute(select(Person.address)).scalars().all()
        assert sorted(people) == sorted(
            ["alice@example.com", bounded(LONG_SENDER, ADDRESS), bounded(LONG_RCPT, ADDRESS)]
        )
        assert all(len(p) <= ADDRESS for p in people)
        assert {m.sender_id for m in rows} == {
            session.execute(
                select(Person.id).where(Person.address == bounded(LONG_SENDER, ADDRESS))
            ).scalar_one()
        }

        attachments = session.execute(select(Attachment)).scalars().all()
        assert {(a.content_type, a.content_id) for a in attachments} == {
            (bounded(CONTENT_TYPE_VALUE, CONTENT_TYPE), bounded(CID, CONTENT_ID))
        }
        assert session.execute(select(func.count()).select_from(Attachment)).scalar_one() == 2


def test_bounded_keeps_short_values_and_separates_long_ones() -> None:
    assert bounded("short", 10) == "short"
    one, two = bounded("p" * 50 + "1", 20), bounded("p" * 50 + "2", 20)
    assert len(one) == len(two) == 20 and one != two
    assert bounded("p" * 50 + "1", 20) == one


def test_a_content_type_with_a_nul_is_stored_as_octet_stream(engine: Engine) -> None:
    data = message(0).replace(b"Content-Type: application/x-", b"Content-Type: \x00application/x-")
    provenance = Provenance("smtp", "test", key="bounds-nul", envelope_to=("alice@example.com",))
    item = prepare(RawMessage(data, provenance))
    assert item.failure is None
    with Session(engine) as session, session.begin():
        assert store_batch(session, [item], NOW) == [Outcome.STORED]
    with Session(engine) as session:
        types = session.execute(select(Attachment.content_type)).scalars().all()
    assert types == ["application/octet-stream"]
