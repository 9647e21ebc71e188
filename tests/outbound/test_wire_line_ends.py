"""Bare CR and LF from mail and forms never reach the relay: digests and sign-in mail.

Stored mail carries bare CRs and LFs in its subject, its sender's name and
its text; the sign-in form gets them in the address and in `next`. What the
relay receives is captured as the bytes on the socket (a listener that
speaks just enough SMTP, so nothing in between normalises them): every line
ends in CRLF, the header block is exactly the headers Bridge set, nothing
was injected, and the bytes are those the outbox holds, unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import OutboundConfig
from bridge.ingest.files import run_import
from bridge.outbound.digest_run import run
from bridge.outbound.mailer import Mailer
from bridge.store.runner import StoreRunner
from bridge.store.tables import Outbox, User
from tests.outbound.test_digest_clock import load
from tests.web import auth_helpers
from tests.web.auth_helpers import STAFF, MakeSite, base_config

make_site = auth_helpers.make_site  # the fixture
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
SET_BY_BRIDGE = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    "x-bridge-origin",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
DIGEST_HEADERS = SET_BY_BRIDGE | {
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "precedence",
}


class WireRelay:
    """An SMTP listener that keeps each DATA payload exactly as it came off the socket."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 wire.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-wire.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                payload = await reader.readuntil(b"\r\n.\r\n")
                self.payloads.append(payload[: -len(b".\r\n")])
                writer.write(b"250 2.0.0 kept\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def wire() -> AsyncIterator[WireRelay]:
    relay = WireRelay()
    await relay.start()
    yield relay
    await relay.stop()


async def send_outbox(engine: Engine, relay: WireRelay, now: datetime) -> list[bytes]:
    """Everything due goes to `relay`; the outbox's bytes, in order."""
    config = OutboundConfig(host="127.0.0.1", port=relay.port, tls="none", timeout=10)
    store = StoreRunner(engine)
    try:
        counts = await Mailer(store, config, "bridge@example.com").send_due(now)
    finally:
        store.close()
    with Session(engine) as session:
        kept = list(session.execute(select(Outbox.data).order_by(Outbox.id)).scalars())
    assert counts.sent == len(kept) == len(relay.payloads)
    return kept


def check_wire(payload: bytes, kept: bytes, allowed: set[str]) -> str:
    """The checks every mail on the wire passes; its plain text."""
    assert not BARE.search(payload)
    # Unchanged on the way: no line ending needed mending, nothing was dot-stuffed away.
    assert payload.replace(b"\r\n..", b"\r\n.") == kept
    message = BytesParser(policy=policy.strict).parsebytes(payload)
    assert {name.lower() for name in message} <= allowed
    assert message["Bcc"] is None and message["X-Injected"] is None
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def raw_mail_with_bare_line_ends() -> bytes:
    return (
        b"From: =?utf-8?q?Mallory=0D=0ABcc=3A_victim=40example=2Eorg?= <mallory@corp.example>\r\n"
        b"To: reader.paris@corp.example\r\n"
        b"Subject: Budget\rX-Injected: yes\r\n"
        b"Subject: =?utf-8?q?Budget_review=0D=0ABcc=3A_victim=40example=2Eorg?=\r\n"
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <bare-line-ends@corp.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"First line\rsecond line after a bare CR\nthird after a bare LF\r\n"
        b".\rdot after a bare CR\r\n"
        b"\r\nBcc: victim@example.org\r\n"
    )


async def test_a_digest_of_mail_with_bare_line_ends_reaches_the_relay_clean(
    engine: Engine, wire: WireRelay, tmp_path: Path
) -> None:
    path = tmp_path / "bare.eml"
    path.write_bytes(raw_mail_with_bare_line_ends())
    result = run_import(engine, [str(path)], workers=1)
    assert result.tally.outcomes["stored"] == 1
    now = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        session.add(
            User(
                address="reader.paris@corp.example",
                timezone="UTC",
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                last_digest_at=datetime(2026, 11, 29, 7, tzinfo=UTC),
            )
        )
    report = run(engine, load(), now, only="reader.paris@corp.example")
    assert report.counts == {"queued": 1}
    [kept] = await send_outbox(engine, wire, now)
    [payload] = wire.payloads
    text = check_wire(payload, kept, DIGEST_HEADERS)
    assert "Budget" in text and "second line after a bare CR" in text


async def test_sign_in_mail_from_a_form_full_of_line_ends_reaches_the_relay_clean(
    sqlite_engine: Engine, make_site: MakeSite, wire: WireRelay
) -> None:
    config = base_config()
    site = await make_site(sqlite_engine, config)
    site.config = dataclasses.replace(
        config,
        outbound=OutboundConfig(
            host="127.0.0.1", port=wire.port, tls="none", from_address="bridge@example.com"
        ),
    )
    for address in (f"{STAFF}\r\nBcc: victim@example.org", f"{STAFF}\rBcc: v@example.org"):
        token = await site.token()
        response = await site.client.post(
            "/login", data={"address": address, "csrf_token": token}, allow_redirects=False
        )
        assert response.status == 400, address
    token = await site.token()
    response = await site.client.post(
        "/login",
        data={
            "address": f"  {STAFF}\r\n",
            "next": "/search?q=a\r\nBcc: victim@example.org\rX-Injected: 1\n",
            "csrf_token": token,
        },
        allow_redirects=False,
    )
    assert response.status == 200
    [kept] = await send_outbox(sqlite_engine, wire, site.clock())
    [payload] = wire.payloads
    text = check_wire(payload, kept, SET_BY_BRIDGE)
    link = re.search(r"http://bridge\.test/login/confirm\?t=\S+", text)
    # A `next` with line ends in it is no page of the viewer: dropped, not carried.
    assert link is not None and "next=" not in link.group(0)
