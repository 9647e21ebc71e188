"""Large messages are received into a temporary file, not memory, and stored byte for byte.

Sixteen concurrent 30 MB messages once peaked at 1.7 GB, all of it bodies
held by the sessions receiving them. Over real sockets, on both backends: a
body over `[smtp] spill_bytes` has a temporary file open in `spill_dir`
while it arrives (seen in this process's open files, as the daemon runs
in-process), the file is gone once the 250 is given or the client hangs up,
and the stored raw bytes are the message exactly, dot-unstuffed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.errors import NotFoundError
from bridge.store.read.reading import find_message, raw_bytes
from tests.smtp_support import connect

KB = 1024


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": database_url},
        "smtp": {
            "domains": ["example.com"],
            "listeners": [{"port": 0}, {"port": 0, "protocol": "lmtp"}],
            "spill_bytes": 64 * KB,
            "spill_dir": str(tmp_path / "spill"),
        },
        "web": {"port": 0},
    }
    running = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await running.start()
    yield running
    await running.stop()


def spill_files(daemon: Daemon) -> list[str]:
    """Files open in this process (the daemon runs in it) under the spill directory."""
    where = daemon.config.smtp.spill_dir
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(where + "/"):
            found.append(target)
    return found


async def eventually(check: object, seconds: float = 5.0) -> None:
    assert callable(check)
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{check} never held")


def large_message(tag: str, size: int) -> tuple[bytes, str]:
    """A message of about `size` bytes, with lines that start with a dot."""
    message_id = f"{tag}@bridge-test.example"
    blob = base64.encodebytes(random.Random(tag).randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    head = (
        f"From: Sender <sender@example.org>\r\nTo: alice@example.com\r\n"
        f"Subject: the scan {tag}\r\nMessage-ID: <{message_id}>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n.\r\n..two dots\r\n.\r\n"
        "--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n'
    ).encode()
    return head + blob + b"--b--\r\n", message_id


def on_the_wire(data: bytes) -> bytes:
    """`data` dot-stuffed (RFC 5321 4.5.2), as an MTA sends it."""
    return b"".join(
        b"." + line if line.startswith(b".") else line for line in data.splitlines(True)
    )


async def stored_raw(daemon: Daemon, message_id: str) -> bytes:
    return await daemon.store.read(lambda s: raw_bytes(s, find_message(s, message_id).raw_sha256))


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
async def test_a_large_message_spills_to_a_file_removed_after_it_is_stored(
    daemon: Daemon, protocol: str
) -> None:
    data, message_id = large_message(f"spill-{protocol}", 1024 * KB)
    wire = on_the_wire(data)
    client = await connect(daemon, protocol)
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    assert spill_files(daemon) == []
    client.writer.write(wire[: len(wire) // 2])
    await client.writer.drain()
    # Half of it in: past spill_bytes, the body is in a temporary file, not in memory.
    await eventually(lambda: len(spill_files(daemon)) == 1)
    assert all(target.endswith("(deleted)") for target in spill_files(daemon))
    client.writer.write(wire[len(wire) // 2 :])
    reply = await client.say(b".")
    assert reply[0].startswith(b"250"), reply
    assert spill_files(daemon) == []
    assert os.listdir(daemon.config.smtp.spill_dir) == []
    assert await stored_raw(daemon, message_id) == data
    await client.close()


async def test_a_small_message_stays_in_memory(daemon: Daemon) -> None:
    data, message_id = large_message("small", 16 * KB)
    client = await connect(daemon, "smtp")
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    client.writer.write(on_the_wire(data))
    await client.writer.drain()
    await asyncio.sleep(0.2)
    assert spill_files(daemon) == []
    assert (await client.say(b"."))[0].startswith(b"250")
    assert await stored_raw(daemon, message_id) == data
    await client.close()


async def test_a_client_hanging_up_mid_data_leaves_no_file(daemon: Daemon) -> None:
    data, _ = large_message("hung-up", 1024 * KB)
    client = await connect(daemon, "smtp")
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    client.writer.write(on_the_wire(data)[: len(data) // 2])
    await client.writer.drain()
    await eventually(lambda: len(spill_files(daemon)) == 1)
    await client.close()
    await eventually(lambda: spill_files(daemon) == [])
    assert os.listdir(daemon.config.smtp.spill_dir) == []
    assert not daemon.guard.sessions


async def test_a_refused_large_message_leaves_no_file(daemon: Daemon) -> None:
    # Over max_message_bytes (no SIZE= announced): 552 once the dot arrives, nothing kept.
    data, _ = large_message("too-big", 1024 * KB)
    client = await connect(daemon, "smtp")
    for session in list(daemon.guard.sessions):
        session.data_size_limit = 512 * KB
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    client.writer.write(on_the_wire(data))
    assert (await client.say(b"."))[0].startswith(b"552")
    assert spill_files(daemon) == []
    # The session goes on.
    small, message_id = large_message("after", 8 * KB)
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    assert (await client.say(on_the_wire(small) + b"."))[0].startswith(b"250")
    assert await stored_raw(daemon, message_id) == small
    await client.close()


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
async def test_a_spill_that_cannot_be_written_is_a_temporary_failure(
    daemon: Daemon, protocol: str, tmp_path: Path
) -> None:
    # Disk full, or a spill_dir that cannot be used: 452 once the dot arrives
    # (once per recipient over LMTP), the MTA retries, the session goes on.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    smtp = replace(daemon.config.smtp, spill_dir=str(blocker / "spill"))
    daemon.config = replace(daemon.config, smtp=smtp)
    data, message_id = large_message(f"no-room-{protocol}", 256 * KB)
    client = await connect(daemon, protocol)
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    for rcpt in (b"alice@example.com", b"bob@example.com"):
        assert (await client.say(b"RCPT TO:<" + rcpt + b">"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    client.writer.write(on_the_wire(data))
    replies = await client.say(b".", count=2 if protocol == "lmtp" else 1)
    assert [r[:9] for r in replies] == [b"452 4.3.1"] * len(replies), replies
    small, small_id = large_message(f"small-{protocol}", 8 * KB)
    assert (await client.say(b"MAIL FROM:<sender@example.org>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    assert (await client.say(on_the_wire(small) + b"."))[0].startswith(b"250")
    assert await stored_raw(daemon, small_id) == small
    with pytest.raises(NotFoundError):
        await stored_raw(daemon, message_id)
    await client.close()
