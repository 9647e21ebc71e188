"""Digests that come back, and auto-replies to them, over SMTP into a running daemon.

The digest is a real one (`digest_message` on real R-devel mail); the
auto-reply is Enron's real "Out of Office AutoReply" (tests/data/rules),
turned into an answer to that digest. Own mail and auto-replies to it are
kept as skipped copies (rule "builtin:own-mail"), never bridged; a person's
own reply to a digest, and other auto-replies, are bridged as usual.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.core.admin_rules.loops import OWN_MAIL_RULE
from bridge.core.outgoing.digest import DigestContent, DigestItem
from bridge.daemon import Daemon
from bridge.i18n import zone
from bridge.outbound.digest_render import Reader, digest_message
from bridge.outbound.digests import set_frequency
from bridge.outbound.keys import signing_key
from bridge.signing import Signer
from bridge.store.tables import Message, Skipped, User
from tests.conftest import DATA

DOMAIN = "bridge.example.com"
BRIDGE = "bridge@example.com"
OOO = (DATA / "rules" / "enron-ooo-autoreply.eml").read_bytes()
NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
OOO_ID = ("Message-ID", "<ooo.to.digest@enron.com>")
LAY = "kenneth.lay@enron.com"
ANY_KEY = Signer(b"s" * 32)


def digest(signer: Signer = ANY_KEY) -> tuple[bytes, str]:
    """A digest for kenneth.lay@enron.com, as the bridge sends it; and its Message-ID."""
    item = DigestItem(
        thread_id=8,
        subject="Heads up",
        space="trading",
        space_name="Trading",
        authors=("Kam Keiser", "Errol McLaughlin"),
        new_count=5,
        newest_pk=1,
        newest_date=NOW,
        is_new=True,
    )
    content = DigestContent("kenneth.lay@enron.com", (), (item,), ("Trading",))
    reader = Reader("kenneth.lay@enron.com", "Kenneth Lay", "en", zone("UTC"), "weekly")
    message, data = digest_message(
        content,
        reader,
        {1: "Kam, the deal closed today."},
        signer=signer,
        base_url="https://bridge.example.com",
        from_address=BRIDGE,
        message_id_domain=DOMAIN,
        now=NOW,
    )
    return data, str(message["Message-ID"])


def header(data: bytes, name: str, value: str) -> bytes:
    """`data` with header `name` set to `value` (replaced, or added on top)."""
    pattern = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb":[^\n]*\n(?:[ \t][^\n]*\n)*")
    line = f"{name}: {value}\n".encode()
    data = data.replace(b"\r\n", b"\n")
    replaced, n = pattern.subn(line, data, count=1)
    return replaced if n else line + data


def without(data: bytes, name: str) -> bytes:
    pattern = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb":[^\n]*\n(?:[ \t][^\n]*\n)*")
    return pattern.sub(b"", data.replace(b"\r\n", b"\n"))


def send(port: int, sender: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(sender, ["archive@example.com"], data)


async def test_own_mail_and_auto_replies_to_it_are_not_bridged(tmp_path: Path) -> None:
    data, digest_id = digest()
    mails = {
        # The digest itself, back through a list or a forward.
        "digest": (BRIDGE, data),
        # The same, by a list that strips unknown headers and renumbers the message.
        "stripped": (
            BRIDGE,
            header(without(data, "X-Bridge-Origin"), "Message-ID", "<relist.1@lists.example.org>"),
        ),
        # Out of office with no RFC 3834 header: only its subject says so.
        "ooo": (
            "michael.hicks@enron.com",
            header(header(header(OOO, "In-Reply-To", digest_id), "To", BRIDGE), *OOO_ID),
        ),
        # An RFC 3834 auto-reply quoting the digest in References only.
        "auto-replied": (
            "michael.hicks@enron.com",
            header(
                header(
                    header(OOO, "Subject", "Re: Digest: 1 active discussion in Trading"),
                    "Auto-Submitted",
                    "auto-replied",
                ),
                "References",
                digest_id,
            ).replace(b"Message-ID: <19301823.", b"Message-ID: <auto.replied."),
        ),
    }
    bridged = {
        # A person answering the digest by hand is a person writing: bridged.
        "human-reply": (
            "michael.hicks@enron.com",
            header(
                header(
                    header(OOO, "Subject", "Re: Digest: 1 active discussion in Trading"),
                    "In-Reply-To",
                    digest_id,
                ),
                "Message-ID",
                "<human.reply@enron.com>",
            ),
        ),
        # An out-of-office answer to someone else's mail is not ours to drop.
        "other-ooo": (
            "michael.hicks@enron.com",
            header(OOO, "In-Reply-To", "<19301800.1075860840000.JavaMail.evans@thyme>"),
        ),
    }
    config = parse_config(
        {
            "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
            "smtp": {"listeners": [{"port": 0}]},
            "web": {"port": 0},
            "bridge": {"message_id_domain": DOMAIN, "address": BRIDGE},
        },
        str(tmp_path / "bridge.toml"),
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        port = daemon.smtp_bound[0].port
        for sender, mail in [*mails.values(), *bridged.values()]:
            await asyncio.to_thread(send, port, sender, mail)
        with Session(daemon.store.engine) as session:
            skipped = session.execute(select(Skipped.rule, Skipped.message_id)).all()
            stored = set(session.execute(select(Message.message_id)).scalars())
    finally:
        await daemon.stop()
    assert len(skipped) == len(mails)
    assert {rule for rule, _ in skipped} == {OWN_MAIL_RULE}
    assert {mid for _, mid in skipped} == {
        digest_id.strip("<>"),
        "relist.1@lists.example.org",
        "ooo.to.digest@enron.com",
        "auto.replied.1075860840370.JavaMail.evans@thyme",
    }
    assert stored == {"human.reply@enron.com", "19301823.1075860840370.JavaMail.evans@thyme"}


async def test_a_mailed_unsubscribe_with_the_digests_token_turns_digests_off(
    tmp_path: Path,
) -> None:
    def request(subject: str, message_id: str) -> bytes:
        mail = header(header(header(OOO, "Subject", subject), "To", BRIDGE), "From", LAY)
        return header(mail, "Message-ID", message_id)

    config = parse_config(
        {
            "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
            "smtp": {"listeners": [{"port": 0}]},
            "web": {"port": 0},
            "bridge": {"message_id_domain": DOMAIN, "address": BRIDGE},
        },
        str(tmp_path / "bridge.toml"),
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        key = await daemon.store.write(lambda s: signing_key(s, config, NOW))
        data, _ = digest(Signer(key))
        parsed = BytesParser(policy=policy.strict).parsebytes(data)
        mailto = str(parsed["List-Unsubscribe"]).split(",")[1].strip(" <>")
        address, _, query = mailto.removeprefix("mailto:").partition("?")
        subject = unquote(query.removeprefix("subject="))
        assert address == BRIDGE and subject.startswith("unsubscribe ")
        port = daemon.smtp_bound[0].port
        # Without the token, or with a forged one: kept, not bridged, and nothing changes.
        await asyncio.to_thread(send, port, LAY, request("unsubscribe", "<u1@enron.com>"))
        forged = "unsubscribe " + subject.split()[1][:-3] + "xyz"
        await asyncio.to_thread(send, port, LAY, request(forged, "<u2@enron.com>"))
        await daemon.scheduler.run_digests()
        assert frequency(daemon, LAY) is None
        # The digest's own mailto: digests off.
        await asyncio.to_thread(send, port, LAY, request(subject, "<u3@enron.com>"))
        await daemon.scheduler.run_digests()
        assert frequency(daemon, LAY) == "off"
        with Session(daemon.store.engine) as session:
            assert session.scalar(select(func.count()).select_from(Message)) == 0
            assert session.scalar(select(func.count()).select_from(Skipped)) == 3
        # Later they choose daily digests in the viewer; a restart reads the
        # last day's mail again, and the old unsubscribe must not undo that.
        await daemon.store.write(lambda s: set_frequency(s, LAY, "daily", NOW))
    finally:
        await daemon.stop()
    restarted = Daemon(config)
    await restarted.start()
    try:
        await restarted.scheduler.run_digests()
        assert frequency(restarted, LAY) == "daily"
    finally:
        await restarted.stop()


def frequency(daemon: Daemon, address: str) -> str | None:
    with Session(daemon.store.engine) as session:
        return session.scalar(select(User.digest_frequency).where(User.address == address))
