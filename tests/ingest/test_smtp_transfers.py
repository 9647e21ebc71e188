"""Messages in transit: a bounded budget of bytes across sessions, and no idle cut mid-DATA.

Sixteen concurrent 31.5 MB messages once took 1.7 GB and the caps allowed
~20 GB; 8 of 10 slow 30 MB transfers were cut by the idle timer, which ran
from the DATA command. Here, over real sockets: a second DATA that would
overflow `max_data_bytes_in_flight` gets 452 before anything is read, and
gets 354 once the first message is in; a body sent slowly for three times
the idle timeout is stored, while a client silent that long is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.config import parse_config
from bridge.daemon import Daemon
from tests.smtp_support import connect, fresh_copy, real_message

MB = 1024 * 1024


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {
            "domains": ["example.com"],
            "listeners": [{"port": 0}],
            "max_message_bytes": 8 * MB,
            "max_data_bytes_in_flight": 10 * MB,
            "idle_timeout": 1.0,
        },
        "web": {"port": 0},
    }
    running = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await running.start()
    yield running
    await running.stop()


async def stored(daemon: Daemon) -> list[str]:
    sql = text("SELECT message_id FROM messages ORDER BY id")
    return list(await daemon.store.read(lambda s: s.execute(sql).scalars().all()))


async def test_data_over_the_budget_waits_its_turn(daemon: Daemon) -> None:
    first, second = await connect(daemon, "smtp"), await connect(daemon, "smtp")
    for client in (first, second):
        assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
        assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    # No SIZE= announced: each DATA counts the 8 MB limit, two do not fit in 10 MB.
    assert (await first.say(b"DATA"))[0].startswith(b"354")
    one, mid_one = fresh_copy(real_message(0), "budget-one")
    first.writer.write(one[: len(one) // 2])
    await first.writer.drain()
    assert (await second.say(b"DATA"))[
        0
    ] == b"452 4.3.1 Insufficient system storage, try again later"
    first.writer.write(one[len(one) // 2 :])
    assert (await first.say(b"."))[0].startswith(b"250")
    # The first message is in: its bytes are given back, the second goes on.
    assert (await second.say(b"DATA"))[0].startswith(b"354")
    two, mid_two = fresh_copy(real_message(1), "budget-two")
    assert (await second.say(two + b"."))[0].startswith(b"250")
    for client in (first, second):
        await client.close()
    assert await stored(daemon) == [mid_one, mid_two]


async def test_an_announced_size_is_what_counts(daemon: Daemon) -> None:
    clients = [await connect(daemon, "smtp") for _ in range(3)]
    for client in clients:
        assert (await client.say(b"MAIL FROM:<sender@example.com> SIZE=2000000"))[0].startswith(
            b"250"
        )
        assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
        # 3 x 2 MB fit in 10 MB: all three may send at once.
        assert (await client.say(b"DATA"))[0].startswith(b"354")
    for n, client in enumerate(clients):
        data, _ = fresh_copy(real_message(n), f"sized-{n}")
        assert (await client.say(data + b"."))[0].startswith(b"250")
        await client.close()
    assert len(await stored(daemon)) == 3


async def test_a_slow_transfer_is_not_cut_by_the_idle_timer(daemon: Daemon) -> None:
    client = await connect(daemon, "smtp")
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    data, mid = fresh_copy(real_message(2), "slow")
    pieces = 12
    step = len(data) // pieces + 1
    for start in range(0, len(data), step):  # 3 s in all, 0.25 s apart: never 1 s idle
        client.writer.write(data[start : start + step])
        await client.writer.drain()
        await asyncio.sleep(0.25)
    assert (await client.say(b"."))[0].startswith(b"250")
    await client.close()
    assert await stored(daemon) == [mid]


async def test_a_silent_client_is_still_closed(daemon: Daemon) -> None:
    client = await connect(daemon, "smtp")
    assert (await client.say(b"MAIL FROM:<sender@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"RCPT TO:<alice@example.com>"))[0].startswith(b"250")
    assert (await client.say(b"DATA"))[0].startswith(b"354")
    client.writer.write(b"Subject: stalled\r\n")
    assert await asyncio.wait_for(client.reader.read(), 5) == b""  # closed after ~1 s
    await client.close()
    assert await stored(daemon) == []
