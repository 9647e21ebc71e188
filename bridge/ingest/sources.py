"""Finding the messages in archive paths: mbox, pipermail, maildir, directories, .eml.

Yields `RawMessage`s in a stable order (sorted paths, file offsets), each
tagged with the file it came from, so an interrupted import resumes exactly
where it stopped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.core.message import Provenance, RawMessage
from bridge.errors import ImportSourceError

# An mbox separator: "From " at the start of a line that ends with a year
# (pipermail writes "From jeff at kanecap.com  Tue Nov  1 01:04:21 2005").
# A quoted address can fold it onto a second line that starts with a space.
MBOX_SEPARATOR = re.compile(rb"^From [^\n]*?(?:\n [^\n]*?)?\d{4}[ \t]*\r?$", re.MULTILINE)
HEADER_LINE = re.compile(rb"(?:From|Date|Subject|Message-ID|To|Received|Return-Path): ", re.I)
SKIP_NAMES = {".DS_Store", "dovecot.index", "dovecot-uidlist", "dovecot-keywords", ".mh_sequences"}


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What the import checkpoint records for a file."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Item:
    """One message found, or (raw=None) a file with no messages."""

    raw: RawMessage | None
    stamp: FileStamp
    last_in_file: bool


@dataclass(frozen=True, slots=True)
class Found:
    """A message-bearing file, its mailbox, and the people its copies were delivered to."""

    path: Path
    mailbox: str
    stamp: FileStamp
    owners: tuple[str, ...] = ()


def discover(paths: list[str]) -> list[Found]:
    """Every message-bearing file under `paths`, sorted, with its mailbox name."""
    found: list[Found] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ImportSourceError(given, "no such file or directory")
        if root.is_file():
            found.append(_found(root, _mailbox_for_file(root, root.parent)))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            here = Path(dirpath)
            if here.name == "tmp" and (here.parent / "cur").is_dir():
                dirnames.clear()  # a maildir's tmp/ holds half-delivered mail
                continue
            for name in sorted(filenames):
                if name in SKIP_NAMES or name.startswith("."):
                    continue
                path = here / name
                if path.is_file():
                    found.append(_found(path, _mailbox_for_file(path, root)))
    return found


def _found(path: Path, mailbox: str) -> Found:
    real = os.path.realpath(path)
    stat = os.stat(real)
    return Found(Path(real), mailbox, FileStamp(real, stat.st_size, stat.st_mtime_ns))


def _mailbox_for_file(path: Path, root: Path) -> str:
    """The mailbox a file belongs to: its folder under the import root.

    `maildir/allen-p/inbox/12` imported from `maildir` is in `allen-p/inbox`;
    a maildir message's `cur`/`new` level is dropped; an mbox is its own
    mailbox.
    """
    parent = path.parent
    if parent.name in ("cur", "new") and (parent.parent / "cur").is_dir():
        parent = parent.parent
    try:
        relative = parent.relative_to(root)
    except ValueError:
        relative = Path(parent.name)
    folder = str(relative) if str(relative) != "." else root.name
    if is_mbox(path):
        stem = path.stem
        return f"{folder}/{stem}" if folder else stem
    return folder


def is_mbox(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    return bool(MBOX_SEPARATOR.match(head)) and _has_header_after_separator(head)


def _has_header_after_separator(head: bytes) -> bool:
    newline = head.find(b"\n")
    rest = head[newline + 1 :] if newline >= 0 else b""
    return bool(re.match(rb"[!-9;-~]+:", rest)) or not rest.strip()


def read_items(found: Found) -> Iterator[Item]:
    """The messages of one file: one for a message file, many for an mbox."""
    data = found.path.read_bytes()
    stamp = found.stamp
    if not (MBOX_SEPARATOR.match(data[:4096]) and _has_header_after_separator(data[:4096])):
        provenance = _provenance(found, str(found.path))
        yield Item(RawMessage(data, provenance), stamp, True)
        return
    spans = list(split_mbox(data))
    if not spans:
        yield Item(None, stamp, True)
        return
    for index, (start, end) in enumerate(spans):
        key = f"{found.path}:{start}"
        provenance = _provenance(found, key)
        yield Item(RawMessage(data[start:end], provenance), stamp, index == len(spans) - 1)


def _provenance(found: Found, key: str) -> Provenance:
    return Provenance("file", str(found.path), found.mailbox, key, envelope_to=found.owners)


def split_mbox(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) byte spans of the messages in an mbox, each after its From_ line.

    A separator counts at the start of the file, after a blank line, or where
    the next line is a header field (pipermail sometimes omits the blank
    line), so a body line that merely starts with "From " does not split a
    message.
    """
    starts: list[int] = []
    ends: dict[int, int] = {}
    for match in MBOX_SEPARATOR.finditer(data):
        begin = match.start()
        after_blank = (
            begin == 0
            or data[max(0, begin - 2) : begin] in (b"\n\n", b"\r\n")
            or (data[max(0, begin - 4) : begin] == b"\r\n\r\n")
        )
        if after_blank or HEADER_LINE.match(data, match.end() + 1):
            starts.append(begin)
            ends[begin] = match.end()
    for index, begin in enumerate(starts):
        body_start = data.find(b"\n", ends[begin])
        body_start = len(data) if body_start < 0 else body_start + 1
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        yield body_start, _trim_separator_blank(data, body_start, end)


def _trim_separator_blank(data: bytes, start: int, end: int) -> int:
    """Drop the one blank line mbox writers put before the next From_ line."""
    if end - start >= 2 and data[end - 2 : end] == b"\n\n":
        return end - 1
    if end - start >= 4 and data[end - 4 : end] == b"\r\n\r\n":
        return end - 2
    return end


def count_messages(found: list[Found]) -> int:
    """A quick count for the progress bar (mbox separators, one per other file)."""
    total = 0
    for item in found:
        if item.stamp.size > 0 and is_mbox(item.path):
            with open(item.path, "rb") as handle:
                total += sum(1 for _ in split_mbox(handle.read()))
        else:
            total += 1
    return total
