"""Importing real archives into the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import shutil
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.core.normalize import normalize_message_id
from bridge.ingest.files import run_import
from bridge.ingest.sources import split_mbox
from bridge.store.read.export import export_rows
from bridge.store.read.reading import (
    find_message,
    find_thread_id,
    raw_bytes,
    thread_messages,
)
from bridge.store.tables import Delivery, ImportedFile, Message, Quarantined, Thread
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
RLISTS = DATA / "rlists"
MBOXES = [str(RLISTS / "r-devel-1998-December.txt"), str(RLISTS / "r-devel-2020-November.txt")]


def enron_id(path: str) -> str:
    """The Message-ID a test Enron file carries."""
    message = email.message_from_bytes((ENRON / path).read_bytes())
    value = normalize_message_id(message["Message-ID"])
    assert value
    return value


def test_copies_of_one_mail_become_one_message_with_many_deliveries(engine: Engine) -> None:
    result = run_import(engine, [str(ENRON)], workers=1)
    assert result.tally.outcomes["quarantined"] == 0
    with Session(engine) as session:
        # "Heads up" sits in giron-d and keiser-k with two different synthetic ids.
        first = find_message(session, enron_id("giron-d/inbox/50"))
        same = find_message(session, enron_id("keiser-k/inbox/135"))
        assert first.id == same.id
        mailboxes = session.execute(
            select(Delivery.mailbox).where(Delivery.message_pk == first.id)
        ).scalars()
        assert sorted(mailboxes) == ["giron-d/inbox", "keiser-k/inbox"]
        files = len([p for p in ENRON.rglob("*") if p.is_file()])
        deliveries = session.execute(select(func.count()).select_from(Delivery)).scalar_one()
        messages = session.execute(select(func.count()).select_from(Message)).scalar_one()
        assert deliveries == files
        assert messages == result.tally.outcomes["stored"]
        assert messages + result.tally.outcomes["merged"] == files


def test_reply_chain_without_headers_is_one_thread_in_reply_order(engine: Engine) -> None:
    run_import(engine, [str(ENRON)], workers=1)
    with Session(engine) as session:
        thread_id = find_thread_id(session, enron_id("giron-d/inbox/50"))
        views = thread_messages(session, thread_id)
        parent_of = {v.message_id: v.parent_message_id for v in views}
        canonical = {
            name: find_message(session, enron_id(name)).message_id
            for name in (
                "giron-d/inbox/50",
                "giron-d/inbox/49",
                "giron-d/inbox/48",
                "keiser-k/inbox/130",
                "keiser-k/inbox/129",
            )
        }
    assert len(views) == 5
    assert parent_of[canonical["giron-d/inbox/50"]] is None
    assert parent_of[canonical["giron-d/inbox/49"]] == canonical["giron-d/inbox/50"]
    assert parent_of[canonical["giron-d/inbox/48"]] == canonical["giron-d/inbox/49"]
    assert parent_of[canonical["keiser-k/inbox/130"]] == canonical["giron-d/inbox/49"]
    assert parent_of[canonical["keiser-k/inbox/129"]] == canonical["keiser-k/inbox/130"]
    root = views[0]
    assert root.depth == 0 and root.new_text.startswith("Hey Gang")
    reply = next(v for v in views if v.message_id == canonical["giron-d/inbox/48"])
    assert reply.new_text.startswith("Looks like we also need to modify the OA tabs")
    assert "-----Original Message-----" in reply.quoted_text
    assert "Original Message" not in reply.new_text


def test_running_the_same_import_again_stores_nothing_twice(engine: Engine) -> None:
    first = run_import(engine, [str(ENRON), *MBOXES], workers=1)
    before = export(engine)
    again = run_import(engine, [str(ENRON), *MBOXES], workers=1)
    assert again.files_skipped == again.files_total
    assert again.tally.read == 0
    # Even with the file checkpoints gone, every copy is recognised as seen.
    with Session(engine) as session, session.begin():
        session.execute(ImportedFile.__table__.delete())
    third = run_import(engine, [str(ENRON), *MBOXES], workers=1)
    assert third.tally.outcomes["seen"] == first.tally.read
    assert third.tally.outcomes["stored"] == third.tally.outcomes["merged"] == 0
    assert export(engine) == before


def test_raw_bytes_come_back_byte_exact(engine: Engine) -> None:
    run_import(engine, [str(ENRON), *MBOXES], workers=1)
    with Session(engine) as session:
        for path in sorted(p for p in ENRON.rglob("*") if p.is_file()):
            key = str(path.resolve())
            sha = session.execute(
                select(Delivery.raw_sha256).where(Delivery.key == key)
            ).scalar_one()
            assert raw_bytes(session, sha) == path.read_bytes(), path
        mbox = RLISTS / "r-devel-1998-December.txt"
        data = mbox.read_bytes()
        for start, end in split_mbox(data):
            key = f"{mbox.resolve()}:{start}"
            sha = session.execute(
                select(Delivery.raw_sha256).where(Delivery.key == key)
            ).scalar_one()
            assert raw_bytes(session, sha) == data[start:end]


def test_pipermail_archive_threads_by_headers(engine: Engine) -> None:
    mbox = RLISTS / "r-devel-1998-December.txt"
    result = run_import(engine, [str(mbox)], workers=1)
    spans = list(split_mbox(mbox.read_bytes()))
    assert result.tally.read == len(spans) == 99
    named = agreed = 0
    with Session(engine) as session:
        for start, end in spans:
            message = email.message_from_bytes(mbox.read_bytes()[start:end])
            own = normalize_message_id(message["Message-ID"] or "")
            parent = normalize_message_id((message["In-Reply-To"] or "").split(" ")[0])
            if not own or not parent:
                continue
            try:
                parent_row = find_message(session, parent)
            except Exception:
                continue  # the parent is not in this month's archive
            named += 1
            child = find_message(session, own)
            agreed += child.parent_id == parent_row.id
        sender = session.execute(
            select(func.count()).select_from(Message).where(Message.sender_id.is_(None))
        ).scalar_one()
    assert named >= 20
    assert agreed == named
    assert sender == 0  # "user at host" addresses were all read


def test_bad_input_is_quarantined_and_the_import_goes_on(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    shutil.copytree(ENRON / "giron-d", folder / "giron-d")
    (folder / "giron-d" / "inbox" / "junk").write_bytes(bytes(range(256)) * 4)
    (folder / "giron-d" / "inbox" / "empty").write_bytes(b"")
    result = run_import(engine, [str(folder)], workers=1)
    assert result.tally.outcomes["stored"] == 3
    assert result.tally.outcomes["quarantined"] == 2
    with Session(engine) as session:
        rows = session.execute(select(Quarantined)).scalars().all()
        reasons = {Path(r.key).name: r.reason for r in rows}
        assert reasons == {"junk": "not-a-message", "empty": "empty"}
        junk = next(r for r in rows if r.key.endswith("junk"))
        assert raw_bytes(session, junk.raw_sha256) == bytes(range(256)) * 4


def test_export_has_every_field(engine: Engine) -> None:
    run_import(engine, [str(ENRON)], workers=1)
    rows = export(engine)
    # 19 files: "Heads up" is 5 mails in 8 copies, "SoCal Gas" 5 in 9, plus allen-p 1 and 8.
    assert len(rows) == 12
    keys = {
        "message_id",
        "aliases",
        "thread_id",
        "parent_id",
        "date",
        "from",
        "to",
        "cc",
        "subject",
        "new_text",
        "quoted_text",
        "signature",
        "attachments",
        "deliveries",
        "flags",
    }
    for row in rows:
        assert keys <= set(row)
        assert "<" not in row["message_id"]
        assert row["date"] is None or row["date"].endswith("Z")
    merged = [row for row in rows if row["aliases"]]
    assert merged and all(len(row["deliveries"]) == len(row["aliases"]) + 1 for row in merged)
    no_id = [row for row in rows if "no-message-id" in row["flags"]]
    assert len(no_id) == 2  # allen-p 1 and 8 lost their headers upstream
    with Session(engine) as session:
        threads = session.execute(select(func.count()).select_from(Thread)).scalar_one()
    assert len({row["thread_id"] for row in rows}) == threads


def export(engine: Engine) -> list[dict]:
    with Session(engine) as session:
        return list(export_rows(session))


def test_bounces_and_auto_replies_are_kept_flagged_but_are_not_posts(engine: Engine) -> None:
    rules = DATA / "rules"
    run_import(engine, [str(rules / "aol-mailbox-full-dsn.eml"), str(ENRON)], workers=1)
    with Session(engine) as session:
        bounce = session.execute(select(Message).where(Message.flags.like("%bounce%"))).scalar_one()
        thread = session.get_one(Thread, bounce.thread_id)
        heads_up = session.get_one(Thread, find_thread_id(session, enron_id("giron-d/inbox/50")))
    assert "auto-reply" in bounce.flags  # the DSN says Auto-Submitted too
    assert thread.message_count == 0  # stored, flagged, and no discussion post
    assert heads_up.message_count == 5
