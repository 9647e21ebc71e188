"""`bridge access show`, `search --as`, `export --as` and `bridge audit`, run as an admin would.

The store holds the salary case of the README's "Who sees what" section,
delivered over the SMTP path with envelope recipients: alice writes to bob,
bob answers, bob then writes with chloe in Cc. Every answer is checked
against what the rule says chloe, bob and an outsider may see, and every
look through someone's eyes must leave an audit entry.
"""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bridge import pipeline
from bridge.cli import main
from bridge.core.message import Provenance, RawMessage
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade

CONFIG = """
[bridge]
staff_domains = ["example.com"]
"""

MAIL = [
    (
        "<salary-1@example.com>",
        "alice@example.com",
        "bob@example.com",
        "",
        "",
        "Salary review",
        "Dana's raise is 12 percent, keep it quiet.",
    ),
    (
        "<salary-2@example.com>",
        "bob@example.com",
        "alice@example.com",
        "",
        "<salary-1@example.com>",
        "Re: Salary review",
        "Agreed, twelve percent for Dana.",
    ),
    (
        "<salary-3@example.com>",
        "bob@example.com",
        "alice@example.com",
        "chloe@example.com",
        "<salary-1@example.com> <salary-2@example.com>",
        "Re: Salary review",
        "Chloe, please book the review meeting for Dana.",
    ),
]


def message(
    n: int, mid: str, sender: str, to: str, cc: str, refs: str, subject: str, body: str
) -> bytes:
    lines = [
        f"Message-ID: {mid}",
        f"From: {sender}",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        *([f"References: {refs}", f"In-Reply-To: {refs.split()[-1]}"] if refs else []),
        f"Subject: {subject}",
        f"Date: Mon, 2 Mar 2026 10:0{n}:00 +0000",
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "bridge.db"
    config = tmp_path / "bridge.toml"
    config.write_text(CONFIG)
    engine: Engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    for n, (mid, sender, to, cc, refs, subject, body) in enumerate(MAIL):
        rcpts = tuple(a for a in (to, cc) if a)
        raw = RawMessage(
            message(n, mid, sender, to, cc, refs, subject, body),
            Provenance("smtp", "test", key=f"smtp-{n}", envelope_to=rcpts),
        )
        pipeline.store_alone(engine, pipeline.prepare(raw), datetime.now(UTC), pipeline.Tally())
    engine.dispose()
    return db, config


def run(store: tuple[Path, Path], capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    db, config = store
    code = main([*argv, "--db", str(db), "--config", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def audit(store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return json.loads(run(store, capsys, "audit", "--json"))


def thread_id(store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> int:
    return int(
        json.loads(run(store, capsys, "thread", "<salary-1@example.com>", "--json"))["thread_id"]
    )


def test_access_show_lists_only_the_messages_a_person_was_sent(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tid = thread_id(store, capsys)
    shown = json.loads(
        run(store, capsys, "access", "show", "Chloe@Example.com", str(tid), "--json")
    )
    assert shown["address"] == "chloe@example.com"
    by_id = {m["message_id"]: m for m in shown["messages"]}
    assert by_id["salary-1@example.com"]["visible"] is False
    assert by_id["salary-2@example.com"]["visible"] is False
    assert by_id["salary-3@example.com"]["because"] == ["delivered", "named"]

    text = run(store, capsys, "access", "show", "chloe@example.com", "<salary-2@example.com>")
    assert f"[{tid}] Salary review: sees 1 of 3 messages" in text
    assert text.count("HIDDEN") == 2

    listing = json.loads(run(store, capsys, "access", "show", "chloe@example.com", "--json"))
    assert listing["threads"] == 1 and listing["messages"] == 1
    (only,) = listing["newest"]
    # Her view of the thread: her message's subject, size and date, not the thread's.
    assert only["subject"] == "Re: Salary review"
    assert (only["visible_messages"], only["thread_messages"]) == (1, 3)
    assert only["last_date"] == "2026-03-02T10:02:00Z"

    bob = json.loads(run(store, capsys, "access", "show", "bob@example.com", "--json"))
    assert bob["messages"] == 3
    outsider = run(store, capsys, "access", "show", "mallory@example.net", str(tid))
    assert "sees 0 of 3 messages" in outsider and "404" in outsider

    entries = audit(store, capsys)
    assert [(e["action"], e["subject"]) for e in entries] == [
        ("access.show", "mallory@example.net"),
        ("access.show", "bob@example.com"),
        ("access.show", "chloe@example.com"),
        ("access.show", "chloe@example.com"),
        ("access.show", "chloe@example.com"),
    ]
    assert all(e["actor"] for e in entries)


def test_search_as_finds_only_what_the_person_may_see(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    admin = json.loads(run(store, capsys, "search", "Dana", "--json"))
    assert admin["threads"][0]["matching_messages"] == 3
    chloe = json.loads(run(store, capsys, "search", "--as", "chloe@example.com", "Dana", "--json"))
    (hit,) = chloe["threads"]
    assert (hit["matching_messages"], hit["thread_messages"]) == (1, 1)
    assert hit["message_id"] == "salary-3@example.com"
    assert "percent" not in json.dumps(chloe)
    nothing = json.loads(
        run(store, capsys, "search", "--as", "chloe@example.com", "percent", "--json")
    )
    assert nothing["total_threads"] == 0 and nothing["threads"] == []

    (entry, *_) = audit(store, capsys)
    assert (entry["action"], entry["subject"], entry["detail"]) == (
        "search.as",
        "chloe@example.com",
        "percent",
    )
    # The admin's own search is not about anyone: it leaves no entry.
    assert [e["action"] for e in audit(store, capsys)].count("search.as") == 2


def test_export_as_holds_only_the_persons_messages_and_copies(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = [
        json.loads(line)
        for line in run(store, capsys, "export", "--as", "chloe@example.com").splitlines()
    ]
    assert [r["message_id"] for r in rows] == ["salary-3@example.com"]
    assert all("percent" not in json.dumps(r) for r in rows)
    everything = run(store, capsys, "export").splitlines()
    assert len(everything) == 3

    out = tmp_path / "chloe.mbox"
    run(store, capsys, "export", "--as", "chloe@example.com", "--format", "mbox", "-o", str(out))
    box = mailbox.mbox(out, create=False)
    try:
        assert [m["Message-ID"] for m in box] == ["<salary-3@example.com>"]
    finally:
        box.close()
    assert [e["action"] for e in audit(store, capsys)] == ["export.as", "export.as"]


def test_a_bad_address_is_a_one_line_error(
    store: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, config = store
    code = main(["access", "show", "not-an-address", "--db", str(db), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "bridge: error: 'not-an-address' is not an email address\n"
    assert audit(store, capsys) == []
