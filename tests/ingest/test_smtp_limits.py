"""What a session may send: envelope bytes, recipients, idle commands and errors.

Undecodable UTF-8 and NUL in MAIL FROM or RCPT TO used to be accepted, then
fail to store (and to quarantine) on every attempt: the client got 451
forever. Sent here as raw bytes over a real socket, on SQLite and
PostgreSQL, each must be refused at its command while the session goes on,
a good message after it must be stored, and LMTP must answer one line per
accepted recipient. 20,000 RCPT and 50,000 NOOP were once accepted: beyond
`max_recipients` RCPT gets 452, and beyond `max_junk_commands` idle commands
or `max_errors` error replies without a message accepted the session is
closed with 421, as Postfix does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.config import parse_config
from bridge.daemon import Daemon
from tests.smtp_support import connect, fresh_copy, real_message


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": database_url},
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


async def test_recipients_beyond_the_cap_get_452_and_the_message_keeps_the_rest(
    daemon: Daemon,
) -> None:
    cap = daemon.config.smtp.max_recipients
    client = await connect(daemon, "smtp")
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    for n in range(cap):
        assert (await client.say(b"RCPT TO:<r%d@example.com>" % n))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<one.more@example.com>"))[0] == (
        b"452 4.5.3 Too many recipients"
    )
    data, mid = fresh_copy(real_message(2), "many")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    assert (await client.say(data + b"."))[0].startswith(b"250")
    await client.close()
    ((stored_id, envelope_to),) = await stored(daemon)
    assert stored_id == mid and len(envelope_to.split("\n")) == cap


async def test_idle_commands_without_a_message_close_the_session(daemon: Daemon) -> None:
    cap = daemon.config.smtp.max_junk_commands
    client = await connect(daemon, "smtp")  # its EHLO counts as one
    for _ in range(cap - 1):
        assert (await client.say(b"NOOP"))[0].startswith(b"250")
    assert (await client.say(b"NOOP"))[0].startswith(b"421 4.7.0")
    assert await client.reader.read() == b""  # closed
    await client.close()


async def test_a_message_accepted_resets_the_count(daemon: Daemon) -> None:
    cap = daemon.config.smtp.max_junk_commands
    client = await connect(daemon, "smtp")
    for n in range(3):
        for _ in range(cap - 2):
            assert (await client.say(b"RSET"))[0].startswith(b"250")
        data, _ = fresh_copy(real_message(n), f"progress-{n}")
        assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
        assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
        assert (await client.say(b"DATA"))[0].startswith(b"354")
        assert (await client.say(data + b"."))[0].startswith(b"250")
    await client.close()
    assert len(await stored(daemon)) == 3


async def test_errors_without_a_message_close_the_session(daemon: Daemon) -> None:
    cap = daemon.config.smtp.max_errors
    client = await connect(daemon, "smtp")
    for _ in range(cap):  # RCPT before MAIL: 503 each time
        assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"503")
    answer = await client.say(b"RCPT TO:<alice@example.com>", count=2)
    assert answer[0].startswith(b"503") and answer[1].startswith(b"421 4.7.0 Too many errors")
    assert await client.reader.read() == b""
    await client.close()


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
async def test_a_line_over_the_limit_gets_500_5_5_2_and_the_session_goes_on(
    daemon: Daemon, protocol: str
) -> None:
    """300 KiB on one line: refused with an enhanced code (per recipient over LMTP), in step."""
    client = await connect(daemon, protocol)
    recipients = [b"alice@example.com", b"bob@example.com"]
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    for rcpt in recipients:
        assert (await client.say(b"RCPT TO:<" + rcpt + b">"))[0].startswith(b"250")
    data, _ = fresh_copy(real_message(3), f"long-{protocol}")
    head, _, body = data.partition(b"\r\n\r\n")
    long_data = head + b"\r\n\r\n" + b"x" * (300 * 1024) + b"\r\n" + body
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    answers = await client.say(long_data + b".", count=len(recipients) if protocol == "lmtp" else 1)
    if protocol == "lmtp":
        assert answers == [b"500 5.5.2 Line too long <" + r + b">" for r in recipients]
    else:
        assert answers == [b"500 5.5.2 Line too long"]
    # In step: the same session delivers a normal message next.
    good, mid = fresh_copy(real_message(4), f"after-long-{protocol}")
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    assert (await client.say(good + b"."))[0].startswith(b"250")
    await client.close()
    assert await stored(daemon) == [(mid, "alice@example.com")]
