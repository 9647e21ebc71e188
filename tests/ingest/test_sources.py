"""Finding messages in archive paths: every layout `bridge import` promises to read."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ImportSourceError
from bridge.ingest.sources import discover, read_items, split_mbox
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
LIST = DATA / "rlists" / "r-devel-2020-November.txt"


def messages(paths: list[Path]) -> list[tuple[str, bytes]]:
    found = discover([str(p) for p in paths])
    return [
        (item.raw.provenance.mailbox, item.raw.data)
        for f in found
        for item in read_items(f)
        if item.raw is not None
    ]


def test_maildir_reads_cur_and_new_and_ignores_tmp(tmp_path: Path) -> None:
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    one = (ENRON / "giron-d" / "inbox" / "50").read_bytes()
    two = (ENRON / "giron-d" / "inbox" / "49").read_bytes()
    (box / "cur" / "1700000000.1.host:2,S").write_bytes(one)
    (box / "new" / "1700000001.2.host").write_bytes(two)
    (box / "tmp" / "1700000002.3.host").write_bytes(b"half-written")
    found = messages([box])
    assert sorted(data for _, data in found) == sorted([one, two])
    assert {mailbox for mailbox, _ in found} == {"Maildir"}


def test_message_directories_name_the_user_folder() -> None:
    found = messages([ENRON])
    assert len(found) == len([p for p in ENRON.rglob("*") if p.is_file()])
    assert {"giron-d/inbox", "keiser-k/inbox", "allen-p/inbox"} <= {m for m, _ in found}


def test_eml_and_single_message_with_from_line(tmp_path: Path) -> None:
    body = (ENRON / "keiser-k" / "inbox" / "129").read_bytes()
    eml = tmp_path / "note.eml"
    eml.write_bytes(body)
    with_from = tmp_path / "saved"
    with_from.write_bytes(b"From someone@example.com Wed Jan 30 12:32:11 2002\n" + body)
    found = messages([eml, with_from])
    assert [data for _, data in found] == [body, body]


def test_pipermail_archive_splits_on_from_lines_only() -> None:
    data = LIST.read_bytes()
    assert len(list(split_mbox(data))) == 41  # 41 "From " separator lines after blank lines
    found = messages([LIST])
    assert len(found) == 41
    assert all(raw.startswith(b"From: ") for _, raw in found)
    assert {mailbox for mailbox, _ in found} == {"rlists/r-devel-2020-November"}


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImportSourceError, match="no such file or directory"):
        discover([str(tmp_path / "missing")])
