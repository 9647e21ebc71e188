"""Bad bytes in the envelope get a permanent 553 at the command, on SQLite and PostgreSQL.

Undecodable UTF-8 and NUL in MAIL FROM or RCPT TO used to be accepted, then
fail to store (and to quarantine) on every attempt: the client got 451
forever. Sent here as raw bytes over a real socket, each must be refused at
its command while the session goes on, a good message after it must be
stored, and LMTP must answer one line per accepted recipient.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.config import parse_config
from bridge.daemon import Daemon
from tests.smtp_support import fresh_copy, real_message


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bridge.db"
    from tests.conftest import _fresh_pg

    url = request.getfixturevalue("pg_database")
    _fresh_pg(url).dispose()
    return str(url)


@pytest.fixture
async def daemon(database: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": database},
        "smtp": {
            "domains": ["example.com"],
            "listeners": [{"port": 0}, {"port": 0, "protocol": "lmtp"}],
            "smtputf8": True,
        },
        "web": {"port": 0},
    }
    running = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await running.start()
    yield running
    await running.stop()


class Client:
    """A line-at-a-time client over a real socket, sending exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def replies(self, count: int = 1) -> list[bytes]:
        lines: list[bytes] = []
        while len(lines) < count:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).rstrip(b"\r\n")
            lines.append(line)
            if line[3:4] == b"-":
                count += 1
        return lines

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def say(self, line: bytes, count: int = 1) -> list[bytes]:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.replies(count)


async def connect(daemon: Daemon, protocol: str) -> Client:
    bound = next(b.port for b in daemon.smtp_bound if b.protocol == protocol)
    client = Client(*await asyncio.open_connection("127.0.0.1", bound))
    assert (await client.replies())[0].startswith(b"220")
    hello = b"LHLO" if protocol == "lmtp" else b"EHLO"
    assert (await client.say(hello + b" mta.test"))[-1].startswith(b"250")
    return client


async def stored(daemon: Daemon) -> list[tuple[str, str]]:
    sql = text(
        "SELECT m.message_id, d.envelope_to FROM deliveries d "
        "JOIN messages m ON m.id = d.message_pk ORDER BY d.id"
    )
    rows = await daemon.store.read(lambda s: s.execute(sql).all())
    return [(r[0], r[1]) for r in rows]


BAD = [b"\xff\xfe@b.example.com", b"a\x00b@example.com", b"bad\xc3@example.com"]


@pytest.mark.parametrize("address", BAD, ids=["not-utf8", "nul", "cut-utf8"])
async def test_a_bad_sender_or_recipient_is_refused_for_good(
    daemon: Daemon, address: bytes
) -> None:
    client = await connect(daemon, "smtp")
    assert (await client.say(b"MAIL FROM:<" + address + b"> SMTPUTF8"))[0].startswith(b"553 5.1.7")
    # The session goes on: a good sender, a bad recipient refused, a good one taken.
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<" + address + b">"))[0].startswith(b"553 5.1.3")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    data, mid = fresh_copy(real_message(0), "envelope")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    assert (await client.say(data + b"."))[0].startswith(b"250")
    assert (await client.say(b"QUIT"))[0].startswith(b"221")
    await client.close()
    assert await stored(daemon) == [(mid, "alice@example.com")]


async def test_lmtp_answers_each_accepted_recipient_when_one_is_bad(daemon: Daemon) -> None:
    client = await connect(daemon, "lmtp")
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<a\x00b@example.com>"))[0].startswith(b"553")
    assert (await client.say(b"RCPT TO:<bob@example.com>"))[0].startswith(b"250")
    data, mid = fresh_copy(real_message(1), "lmtp-bad")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    answers = await client.say(data + b".", count=2)
    assert answers == [
        b"250 2.0.0 Message accepted <alice@example.com>",
        b"250 2.0.0 Message accepted <bob@example.com>",
    ]
    # In step: the next command gets its own answer.
    assert (await client.say(b"NOOP"))[0].startswith(b"250")
    await client.close()
    assert await stored(daemon) == [(mid, "alice@example.com\nbob@example.com")]
