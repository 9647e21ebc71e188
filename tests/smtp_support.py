"""Helpers for the SMTP and daemon tests: real messages, made distinct, and free ports."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiosmtpd.controller import Controller

if TYPE_CHECKING:
    from bridge.daemon import Daemon

DATA = Path(__file__).parent / "data" / "smtp"
MESSAGES = sorted(DATA.glob("*.eml"))


def real_message(index: int = 0) -> bytes:
    """A corpus message with CRLF line ends, as it travels over SMTP."""
    data = MESSAGES[index % len(MESSAGES)].read_bytes()
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def fresh_copy(data: bytes, tag: str) -> tuple[bytes, str]:
    """`data` with a new Message-ID and a tagged Subject: a distinct message, not a duplicate."""
    message_id = f"{tag}@bridge-test.example"
    data, n = re.subn(
        rb"(?im)^Message-ID:.*$", f"Message-ID: <{message_id}>".encode(), data, count=1
    )
    assert n == 1
    data = re.sub(
        rb"(?im)^(Subject:.*)$", lambda m: m.group(1) + f" #{tag}".encode(), data, count=1
    )
    return data, message_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    """A client greeted and past LHLO/EHLO on the daemon's listener for `protocol`."""
    bound = next(b.port for b in daemon.smtp_bound if b.protocol == protocol)
    client = Client(*await asyncio.open_connection("127.0.0.1", bound))
    assert (await client.replies())[0].startswith(b"220")
    hello = b"LHLO" if protocol == "lmtp" else b"EHLO"
    assert (await client.say(hello + b" mta.test"))[-1].startswith(b"250")
    return client


@dataclass
class Relay:
    """The company relay (an aiosmtpd handler), told how to answer DATA: ok, 4xx, 5xx or drop."""

    mode: str = "ok"
    received: list[bytes] = field(default_factory=list)
    attempts: list[bytes] = field(default_factory=list)
    envelopes: list[tuple[list[str], bytes]] = field(default_factory=list)  # RCPT TOs, bytes

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts.append(envelope.original_content)
        if self.mode == "4xx":
            return "451 4.3.0 try again later"
        if self.mode == "5xx":
            return "550 5.7.1 relaying denied for you"
        if self.mode == "drop":
            server.transport.close()
            return "421 gone"
        self.received.append(envelope.original_content)
        self.envelopes.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK queued"


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    """A `Relay` listening on a free loopback port: (handler, port)."""
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
