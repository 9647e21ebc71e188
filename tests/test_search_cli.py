"""`bridge search` and `bridge thread` for people: `-word` queries, zones, JSON snippets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge import pipeline
from bridge.cli import main
from bridge.core.message import Provenance, RawMessage
from bridge.store.db import make_engine

MAIL = [
    (
        "<q3-1@example.com>",
        "",
        "Q3 budget",
        "Mon, 2 Mar 2026 15:04:00 +0000",
        "The Q3 budget <draft> & notes: see the budget sheet from acme.",
    ),
    (
        "<q3-2@example.com>",
        "<q3-1@example.com>",
        "Re: Q3 budget",
        "Mon, 2 Mar 2026 16:30:00 +0000",
        "Budget approved, without the consultants.",
    ),
]


def message(mid: str, parent: str, subject: str, date: str, body: str) -> bytes:
    lines = [
        f"Message-ID: {mid}",
        "From: Alice <alice@example.com>",
        "To: bob@example.com",
        *([f"In-Reply-To: {parent}", f"References: {parent}"] if parent else []),
        f"Subject: {subject}",
        f"Date: {date}",
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


@pytest.fixture
def db(database_url: str) -> str:
    engine = make_engine(database_url)
    try:
        for n, fields in enumerate(MAIL):
            raw = RawMessage(
                message(*fields),
                Provenance("smtp", "test", key=f"smtp-{n}", envelope_to=("bob@example.com",)),
            )
            pipeline.store_alone(engine, pipeline.prepare(raw), datetime.now(UTC), pipeline.Tally())
    finally:
        engine.dispose()
    return database_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_a_query_starting_with_a_dash_goes_after_double_dash(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["search", "-acme", "--db", db])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.endswith("put the query after --: bridge search --db " + db + " -- -acme"), err
    with pytest.raises(SystemExit):
        main(["search", "--json", "budget", "-acme"])
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        "bridge: error: unrecognized arguments: -acme; a query word starting with - is "
        "read as an option: put the query after --: bridge search --json -- budget -acme"
    )

    found = json.loads(run(capsys, "search", "--db", db, "--json", "--", "budget", "-acme"))
    assert [t["message_id"] for t in found["threads"]] == ["q3-2@example.com"]
    assert found["query"] == "budget -acme"


def test_json_snippets_are_plain_text_with_match_offsets(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    found = json.loads(run(capsys, "search", "--db", db, "--json", "sheet"))
    (hit,) = found["threads"]
    snippet = hit["snippet"]
    assert "<draft> & notes" in snippet
    assert "<mark>" not in snippet and "&lt;" not in snippet and "&amp;" not in snippet
    assert [snippet[a:b] for a, b in hit["snippet_hits"]] == ["sheet"]

    found = json.loads(run(capsys, "search", "--db", db, "--json", "budget", "acme"))
    (hit,) = found["threads"]
    marked = [hit["snippet"][a:b].lower() for a, b in hit["snippet_hits"]]
    assert set(marked) == {"budget", "acme"}
    assert marked.count("budget") == 2


def test_thread_times_carry_their_zone(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    lines = run(capsys, "thread", "--db", db, "<q3-2@example.com>").splitlines()
    assert lines[1].startswith("2026-03-02 15:04 UTC  Alice: The Q3 budget")
    assert lines[2].startswith("  2026-03-02 16:30 UTC  Alice: Budget approved")

    config = tmp_path / "bridge.toml"
    config.write_text('[web]\ndefault_timezone = "America/Chicago"\n', encoding="utf-8")
    lines = run(
        capsys, "thread", "--db", db, "--config", str(config), "<q3-1@example.com>"
    ).splitlines()
    assert lines[1].startswith("2026-03-02 09:04 CST  Alice:")
    assert lines[2].startswith("  2026-03-02 10:30 CST  Alice:")
