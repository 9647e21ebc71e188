"""Replying by mail to a digest: the real daemon's SMTP and LMTP listeners, swaks, a real
aiosmtpd relay, on SQLite and PostgreSQL.

A thread is mailed in over SMTP (bob writes to alice, Cc carol); alice's
digest token address is made with the daemon's own key, as a digest run
makes it. Her reply mailed there reaches the relay as a reply-all to bob's
message; a forged sender, another person's token, an expired or tampered
token, a message she may not see, an auto-reply and bounces are refused or
dropped, and nothing is stored or sent for them.
"""

from __future__ import annotations

import asyncio
import email
import smtplib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.core.outgoing.reply_address import make_token, reply_address
from bridge.daemon import Daemon
from bridge.outbound.keys import signing_key
from bridge.signing import DIGEST_REPLY, Signer
from bridge.store.tables import Message, Outbox
from tests.smtp_support import Relay

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
MALLORY = "mallory@example.com"
BRIDGE = "bridge@example.com"
PARENT_ID = "budget-1@example.com"
SECRET_ID = "secret-1@example.com"
QUOTED = "DIGESTQUOTEMARKER"

MakeDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def make_daemon(
    database_url: str, tmp_path: Path, relay: tuple[Relay, int]
) -> AsyncIterator[MakeDaemon]:
    daemons: list[Daemon] = []

    async def make(**web: Any) -> Daemon:
        data = {
            "database": {"url": database_url},
            "smtp": {
                "domains": ["example.com"],
                "listeners": [{"port": 0}, {"port": 0, "protocol": "lmtp"}],
            },
            "web": {"port": 0, **web},
            "bridge": {
                "address": BRIDGE,
                "message_id_domain": "bridge.example.com",
                "staff_domains": ["example.com"],
            },
            "outbound": {
                "host": "127.0.0.1",
                "port": relay[1],
                "tls": "none",
                "poll_interval": 0.1,
            },
        }
        daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")), database_url)
        await daemon.start()
        daemons.append(daemon)
        await asyncio.to_thread(_mail_the_thread, port(daemon))
        return daemon

    yield make
    for daemon in daemons:
        await daemon.stop()


def port(daemon: Daemon, protocol: str = "smtp") -> int:
    return next(b.port for b in daemon.smtp_bound if b.protocol == protocol)


def _mail_the_thread(smtp_port: int) -> None:
    parent = (
        f"From: Bob <{BOB}>\r\nTo: Alice <{ALICE}>\r\nCc: Carol <{CAROL}>\r\n"
        "Subject: Budget for Q3\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n"
        f"Message-ID: <{PARENT_ID}>\r\n\r\nShall we ship the Q3 budget on Friday?\r\n"
    )
    secret = (
        f"From: Bob <{BOB}>\r\nTo: Carol <{CAROL}>\r\n"
        "Subject: Carol only\r\nDate: Mon, 30 Nov 2026 09:30:00 +0000\r\n"
        f"Message-ID: <{SECRET_ID}>\r\n\r\nFor Carol's eyes.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.sendmail(BOB, [ALICE, CAROL], parent.encode())
        client.sendmail(BOB, [CAROL], secret.encode())


async def pk_of(daemon: Daemon, message_id: str) -> int:
    query = select(Message.id).where(Message.message_id == message_id)
    return int(await daemon.store.read(lambda s: s.execute(query).scalar_one()))


async def token_address(
    daemon: Daemon, person: str, message_id: str = PARENT_ID, expires: date | None = None
) -> str:
    """The reply address a digest run gives `person` for `message_id` (the daemon's key)."""
    now = datetime.now(UTC)
    key = await daemon.store.write(lambda s: signing_key(s, daemon.config, now))
    signer = Signer(key)
    pk = await pk_of(daemon, message_id)
    until = expires or (now.date() + timedelta(days=30))
    token = make_token(lambda d: signer.mac(DIGEST_REPLY, d), pk, person, until)
    address = reply_address(BRIDGE, token)
    assert address is not None
    return address


def reply_mail(to: str, sender: str = ALICE, extra: str = "", body: str = "") -> bytes:
    words = body or "Fine by me, let us ship it on Friday."
    return (
        f"From: Alice <{sender}>\r\nTo: {to}\r\nSubject: Re: Digest: 1 active discussion\r\n"
        "Date: Tue, 1 Dec 2026 08:00:00 +0000\r\nMessage-ID: <alice-answer@example.com>\r\n"
        f"In-Reply-To: <digest-1@bridge.example.com>\r\n{extra}\r\n"
        f"{words}\r\n\r\n"
        f"On Mon, 30 Nov 2026 at 07:00, Bridge <{BRIDGE}> wrote:\r\n"
        "> Your weekly digest\r\n> * Budget for Q3\r\n"
        f">   Shall we ship the Q3 budget on Friday? {QUOTED}\r\n"
    ).encode()


def swaks(server: str, sender: str, to: str, data: bytes, tmp: Path, *more: str) -> str:
    path = tmp / "reply.eml"
    path.write_bytes(data)
    done = subprocess.run(
        ["swaks", "--server", server, "--from", sender, "--to", to, "--data", f"@{path}", *more],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout + done.stderr


async def counts(daemon: Daemon) -> tuple[int, int]:
    """(messages stored, mail in the outbox)."""

    def count(s: Session) -> tuple[int, int]:
        messages = s.execute(select(func.count()).select_from(Message)).scalar_one()
        queued = s.execute(select(func.count()).select_from(Outbox)).scalar_one()
        return int(messages), int(queued)

    return await daemon.store.read(count)


async def relayed(handler: Relay, count: int = 1) -> list[EmailMessage]:
    for _ in range(100):
        if len(handler.received) >= count:
            break
        await asyncio.sleep(0.1)
    return [
        email.message_from_bytes(m, policy=policy.default)  # type: ignore[misc]
        for m in handler.received
    ]


async def test_a_reply_by_mail_goes_out_as_a_reply_all(
    make_daemon: MakeDaemon, relay: tuple[Relay, int], tmp_path: Path
) -> None:
    handler, _ = relay
    daemon = await make_daemon()
    address = await token_address(daemon, ALICE)
    assert len(address.partition("@")[0]) <= 64
    before, _ = await counts(daemon)
    said = await asyncio.to_thread(
        swaks, f"127.0.0.1:{port(daemon)}", ALICE, address, reply_mail(address), tmp_path
    )
    assert "<-  250 2.0.0 Reply sent to the discussion" in said, said
    # Stored and queued before the 250.
    after, queued = await counts(daemon)
    assert (after, queued) == (before + 1, 1)
    [mail] = await relayed(handler)
    assert mail["In-Reply-To"] == f"<{PARENT_ID}>"
    assert mail["References"].split()[-1] == f"<{PARENT_ID}>"
    assert mail["Subject"] == "Re: Budget for Q3"
    assert mail["Reply-To"].addresses[0].addr_spec == ALICE
    to = {a.addr_spec for a in mail["To"].addresses}
    cc = {a.addr_spec for a in mail["Cc"].addresses} if mail["Cc"] else set()
    assert BOB in to and CAROL in cc and ALICE not in to | cc
    assert not any("+r." in a for a in to | cc), "never to a reply address"
    plain = mail.get_body(("plain",))
    assert plain is not None
    content = plain.get_content()
    assert content.startswith("Fine by me, let us ship it on Friday.")
    assert QUOTED not in content, "the quoted digest is cut off"
    assert "Shall we ship the Q3 budget" in content, "the parent is quoted, as from the viewer"
    # In bob's thread, answering bob's message, as alice's.
    parent = await pk_of(daemon, PARENT_ID)
    sql = text("SELECT parent_id FROM messages WHERE message_id = :mid")
    stored = await daemon.store.read(
        lambda s: s.execute(sql, {"mid": mail["Message-ID"].strip("<>")}).scalar_one()
    )
    assert stored == parent


async def test_refused_and_dropped_mail_sends_nothing(
    make_daemon: MakeDaemon, relay: tuple[Relay, int], tmp_path: Path
) -> None:
    handler, _ = relay
    daemon = await make_daemon()
    server = f"127.0.0.1:{port(daemon)}"
    address = await token_address(daemon, ALICE)
    before = await counts(daemon)

    def send(sender: str, to: str, data: bytes, *more: str) -> str:
        return swaks(server, sender, to, data, tmp_path, *more)

    async def said(sender: str, to: str, data: bytes, *more: str) -> str:
        return await asyncio.to_thread(send, sender, to, data, *more)

    # A forged From: the envelope is alice's, the header someone else's.
    forged = await said(ALICE, address, reply_mail(address, sender=MALLORY))
    assert "<** 550 5.7.1 Reply refused: The From header must be" in forged, forged
    # Another person's token: mallory uses alice's address.
    theirs = await said(MALLORY, address, reply_mail(address, sender=MALLORY))
    assert "<** 550 5.7.1 Reply refused: it was made for another address" in theirs, theirs
    # An expired token, and a tampered one.
    old = await token_address(daemon, ALICE, expires=datetime.now(UTC).date() - timedelta(1))
    expired = await said(ALICE, old, reply_mail(old))
    assert "<** 550 5.1.1 Bad reply address: this reply address expired on" in expired, expired
    local, _, domain = address.partition("@")
    flipped = local[:-1] + ("a" if local[-1] != "a" else "b")
    tampered = await said(ALICE, f"{flipped}@{domain}", reply_mail(address))
    assert "<** 550 5.1.1 Bad reply address: this reply address is not one Bridge made" in (
        tampered
    ), tampered
    # A token for a message its person may not see (a genuine token cannot be
    # made for one; this is what a leaked key or a later rule change leaves).
    hidden = await token_address(daemon, ALICE, SECRET_ID)
    unseen = await said(ALICE, hidden, reply_mail(hidden))
    assert "<** 550 5.7.0 Reply not sent: No such message" in unseen, unseen
    # An auto-reply (RFC 3834), an out-of-office subject, Precedence: bulk.
    auto = await said(ALICE, address, reply_mail(address, extra="Auto-Submitted: auto-replied\r\n"))
    assert "<-  250 2.0.0 Accepted and dropped (an automatic reply)" in auto, auto
    office = reply_mail(address).replace(b"Subject: Re:", b"Subject: Out of office: Re:")
    away = await said(ALICE, address, office)
    assert "<-  250 2.0.0 Accepted and dropped (an out-of-office subject)" in away, away
    bulk = await said(ALICE, address, reply_mail(address, extra="Precedence: bulk\r\n"))
    assert "<-  250 2.0.0 Accepted and dropped (Precedence: bulk)" in bulk, bulk
    # Bounces: a null sender (whatever the token), and a DSN with a sender.
    null = await said("<>", address, reply_mail(address))
    assert "<-  250 2.0.0 Accepted and dropped (a bounce)" in null, null
    dsn = (
        f"From: Mail Delivery System <{ALICE}>\r\nTo: {address}\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; x@example.org\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n--b--\r\n"
    ).encode()
    bounced = await said(ALICE, address, dsn)
    assert "<-  250 2.0.0 Accepted and dropped (a bounce: a delivery status report)" in bounced, (
        bounced
    )
    assert await counts(daemon) == before, "nothing stored, nothing queued"
    await asyncio.sleep(0.5)
    assert handler.received == []


async def test_a_reply_address_takes_its_own_smtp_transaction_and_lmtp_answers_each(
    make_daemon: MakeDaemon, relay: tuple[Relay, int]
) -> None:
    handler, _ = relay
    daemon = await make_daemon()
    address = await token_address(daemon, ALICE)
    data = reply_mail(address)

    def smtp_dialogue() -> tuple[int, int, int]:
        with smtplib.SMTP("127.0.0.1", port(daemon), timeout=10) as client:
            client.ehlo()
            client.mail(ALICE)
            first = client.rcpt(CAROL)[0]
            second = client.rcpt(address)[0]
            client.rset()
            client.mail(ALICE)
            alone = client.rcpt(address)[0]
            third = client.rcpt(CAROL)[0]
            return first, second, alone * 1000 + third

    first, second, pair = await asyncio.to_thread(smtp_dialogue)
    assert (first, second, pair) == (250, 452, 250_452)

    # LMTP: one transaction, one answer per recipient.
    def lmtp_dialogue() -> dict[str, tuple[int, bytes]]:
        with smtplib.LMTP("127.0.0.1", port(daemon, "lmtp"), timeout=10) as client:
            client.ehlo("mta.test")  # LMTP: LHLO
            client.mail(ALICE)
            assert client.rcpt(CAROL)[0] == 250
            assert client.rcpt(address)[0] == 250
            client.putcmd("data")
            code, _ = client.getreply()
            assert code == 354
            client.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
            return {who: client.getreply() for who in (CAROL, address)}

    answers = await asyncio.to_thread(lmtp_dialogue)
    assert answers[CAROL][0] == 250 and b"Message accepted" in answers[CAROL][1]
    assert answers[address][0] == 250 and b"Reply sent" in answers[address][1]
    # Carol's copy is kept, not bridged: its words are in the reply Bridge sent on
    # (a second message in the viewer would only repeat them, with the digest quoted).
    kept = text("SELECT mailbox, rule FROM skipped WHERE message_id = 'alice-answer@example.com'")
    rows = await daemon.store.read(lambda s: [tuple(r) for r in s.execute(kept)])
    assert rows == [(CAROL, "builtin:own-mail")], "the reply address is never an envelope"
    mine = (
        select(func.count())
        .select_from(Message)
        .where(Message.message_id == "alice-answer@example.com")
    )
    assert await daemon.store.read(lambda s: s.execute(mine).scalar_one()) == 0
    [mail] = await relayed(handler)
    assert mail["In-Reply-To"] == f"<{PARENT_ID}>"


async def test_too_many_replies_are_deferred(
    make_daemon: MakeDaemon, relay: tuple[Relay, int], tmp_path: Path
) -> None:
    daemon = await make_daemon(replies_per_minute=1)
    address = await token_address(daemon, ALICE)
    server = f"127.0.0.1:{port(daemon)}"
    first = await asyncio.to_thread(swaks, server, ALICE, address, reply_mail(address), tmp_path)
    assert "<-  250 2.0.0 Reply sent" in first, first
    again = reply_mail(address, body="And one more thing.").replace(
        b"alice-answer@", b"alice-again@"
    )
    second = await asyncio.to_thread(swaks, server, ALICE, address, again, tmp_path)
    assert "<** 451 4.7.1 Reply not sent yet: Too many replies in a minute" in second, second
    assert (await counts(daemon))[1] == 1
