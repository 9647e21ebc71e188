"""`bridge import` and friends as a user runs them: real processes, real signals."""

from __future__ import annotations

import json
import mailbox
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.core.normalize import normalize_message_id
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
MBOXES = sorted((DATA / "rlists").glob("*.txt"))


def bridge(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def corpus(tmp_path: Path) -> list[str]:
    """Enough real mail for an import to be caught half-way: Enron, lists, MIME fixtures."""
    root = tmp_path / "corpus"
    shutil.copytree(ENRON, root / "enron")
    for mbox in MBOXES:
        shutil.copy(mbox, root / mbox.name)
    shutil.copytree(DATA / "mime", root / "mime", ignore=shutil.ignore_patterns("*.json", "*.md"))
    return [str(root)]


def export(db: Path) -> list[dict]:
    out = bridge("export", "--format", "jsonl", "--db", str(db)).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_import_prints_a_summary_and_a_second_run_stores_nothing(
    tmp_path: Path, corpus: list[str]
) -> None:
    db = tmp_path / "b.db"
    first = bridge("import", *corpus, "--db", str(db))
    assert "stored" in first.stdout and "quarantined" in first.stdout
    second = bridge("import", *corpus, "--db", str(db))
    assert "read 0 messages" in second.stdout
    assert "stored 0, merged as duplicates 0" in second.stdout


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_interrupted_import_resumes_to_the_same_store(
    tmp_path: Path, corpus: list[str], how: str
) -> None:
    reference = tmp_path / "reference.db"
    bridge("import", *corpus, "--db", str(reference), "--workers", "1")
    expected = export(reference)

    config = tmp_path / "small-batches.toml"
    config.write_text("[import]\nbatch_size = 7\nworkers = 2\n", encoding="utf-8")
    db = tmp_path / "interrupted.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "import",
            *corpus,
            "--db",
            str(db),
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stopped_midway = _wait_for_some_batches(db, process)
    process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    assert stopped_midway, "the import finished before it could be interrupted"
    if how == "interrupt":
        assert process.returncode == 130
        assert b"Traceback" not in err
    resumed = bridge("import", *corpus, "--db", str(db), "--config", str(config))
    assert "already imported" in resumed.stdout
    assert export(db) == expected


def _wait_for_some_batches(db: Path, process: subprocess.Popen) -> bool:
    """True once a few batches are committed while the import is still running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    done = conn.execute("SELECT count(*) FROM imported_files").fetchone()[0]
            except sqlite3.Error:
                done = 0
            if done >= 5:
                return process.poll() is None
        time.sleep(0.01)
    return False


def test_search_thread_raw_and_exports(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    bridge("import", str(ENRON), *map(str, MBOXES), "--db", str(db))
    found = json.loads(bridge("search", "weapon-X", "--json", "--db", str(db)).stdout)
    assert found["threads"][0]["subject"] == "Heads up"
    message_id = found["threads"][0]["message_id"]
    tree = bridge("thread", message_id, "--db", str(db)).stdout
    assert tree.splitlines()[0].endswith("Heads up  (5 messages)")
    assert "  " in tree.splitlines()[2]  # replies are indented under their parent
    as_json = json.loads(bridge("thread", message_id, "--json", "--db", str(db)).stdout)
    assert [m["depth"] for m in as_json["messages"]][:3] == [0, 1, 2]

    raw = subprocess.run(
        [sys.executable, "-m", "bridge", "raw", "<" + message_id + ">", "--db", str(db)],
        capture_output=True,
        check=True,
    ).stdout
    candidates = [p.read_bytes() for p in ENRON.rglob("*") if p.is_file()]
    assert raw in candidates

    out = tmp_path / "all.mbox"
    bridge("export", "--format", "mbox", "-o", str(out), "--db", str(db))
    rows = export(db)
    box = mailbox.mbox(str(out))
    try:
        assert len(box) == len(rows)
        ids = [normalize_message_id(message["Message-ID"] or "") for message in box]
    finally:
        box.close()
    known = {i for row in rows for i in (row["message_id"], *row["aliases"])}
    assert all(i in known for i in ids if i)
    assert ids.count(None) == sum("no-message-id" in row["flags"] for row in rows)


def test_errors_are_one_line_naming_what_is_wrong(tmp_path: Path) -> None:
    missing = bridge("import", str(tmp_path / "nope"), "--db", str(tmp_path / "b.db"), check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0
    assert "nope: no such file or directory" in missing.stderr
    unknown = bridge("raw", "no-such@id", "--db", str(tmp_path / "b.db"), check=False)
    assert unknown.returncode == 1 and "no message 'no-such@id'" in unknown.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[import]\nworkerz = 3\n", encoding="utf-8")
    config = bridge("search", "x", "--config", str(bad), check=False)
    assert config.returncode == 2  # a bad config, like a bad command line
    assert f"{bad}: import.workerz: unknown key" in config.stderr


def test_quarantine_list_show_and_retry(tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "noise").write_bytes(os.urandom(2000).replace(b":", b"."))
    shutil.copy(ENRON / "giron-d" / "inbox" / "50", folder / "ok")
    db = tmp_path / "b.db"
    summary = bridge("import", str(folder), "--db", str(db)).stdout
    assert "quarantined 1" in summary and "quarantined (not-a-message): 1" in summary
    listing = bridge("quarantine", "list", "--db", str(db)).stdout
    ident = listing.split("\t", 1)[0]
    assert "not-a-message" in listing
    shown = bridge("quarantine", "show", ident, "--db", str(db)).stdout
    assert "reason: not-a-message" in shown and "size: 2000 bytes" in shown
    saved = tmp_path / "saved"
    bridge("quarantine", "show", ident, "-o", str(saved), "--db", str(db))
    assert saved.read_bytes() == (folder / "noise").read_bytes()
    retry = bridge("quarantine", "retry", ident, "--db", str(db), check=False)
    assert retry.returncode == 1 and "quarantined (not-a-message)" in retry.stdout
