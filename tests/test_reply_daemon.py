"""Replies end to end: the real `bridge run`, a real relay, Chromium, and Dovecot.

Enron's "Heads up" mail is delivered to the daemon over SMTP. Phillip Love
signs in through `bridge login-link` in Chromium and answers it three ways:
the form without JavaScript (reply all, with a PDF attached), the form with
JavaScript (reply to the sender), and the JSON API. What the relay (aiosmtpd
on a loopback port) receives is checked header by header, then put in a
Dovecot mailbox, where the server's own REFERENCES threading (RFC 5256, the
JWZ algorithm mail clients use) must hang every reply under its parent. The
daemon then reads that mailbox over IMAP: the copies coming back merge with
the stored replies, and each is shown once.
"""

from __future__ import annotations

import email
import signal
import subprocess
import sys
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.store.db import make_engine
from bridge.store.tables import Delivery, Message, MessageId
from tests.browser import artifact, browser  # noqa: F401  (the fixture)
from tests.conftest import DATA
from tests.daemon_support import Bridge
from tests.dovecot import Dovecot
from tests.smtp_support import Relay

PHILLIP = "m..love@enron.com"
KAM = "kam.keiser@enron.com"
ERROL = "errol.mclaughlin@enron.com"
PARENT = DATA / "enron" / "maildir" / "love-p" / "inbox" / "74"  # Kam's "RE: Heads up"
PARENT_ID = "<24818672.1075841079436.JavaMail.evans@thyme>"
PDF = DATA / "attachments" / "simple2.pdf"
DOMAIN = "bridge.enron.com"
HEADER_ID = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"


def config(relay_port: int) -> str:
    return (
        f'[bridge]\nmessage_id_domain = "{DOMAIN}"\naddress = "bridge@enron.com"\n'
        'staff_domains = ["enron.com"]\n'
        f'[outbound]\nhost = "127.0.0.1"\nport = {relay_port}\ntls = "none"\n'
        # Polled rarely: a reply must go out at once, not at the next poll.
        "poll_interval = 600.0\n"
    )


def login_link(daemon: Bridge, address: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "login-link", address, "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        cwd=daemon.tmp_path,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def sign_in(browser: Browser, daemon: Bridge, address: str, js: bool) -> Page:  # noqa: F811
    context = await browser.new_context(locale="en-GB", java_script_enabled=js)
    page = await context.new_page()
    await page.goto(login_link(daemon, address))
    await page.click("main button:has-text('Sign in')")
    await page.wait_for_url(daemon.url + "/")
    return page


def located(engine: Engine, message_id: str) -> tuple[int, int]:
    with Session(engine) as session:
        row = session.execute(
            select(Message.id, Message.thread_id)
            .join(MessageId, MessageId.message_pk == Message.id)
            .where(MessageId.message_id == message_id.strip("<>"))
        ).one()
    return int(row.id), int(row.thread_id)


def wait_for(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def first_line(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).splitlines()[0]


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


async def test_replies_reach_the_relay_thread_in_dovecot_and_merge_when_they_come_back(
    tmp_path: Path,
    relay: tuple[Relay, int],
    browser: Browser,  # noqa: F811
    dovecot: Dovecot,
) -> None:
    from imapclient import IMAPClient

    handler, port = relay
    daemon = Bridge(tmp_path, domains='["enron.com"]', extra=config(port))
    daemon.start()
    try:
        daemon.send(PARENT.read_bytes(), [PHILLIP, ERROL], KAM)
        engine = make_engine(str(daemon.db))
        pk, thread = located(engine, PARENT_ID)

        # 1. The form, without JavaScript: reply all, with a PDF.
        page = await sign_in(browser, daemon, PHILLIP, js=False)
        await page.goto(f"{daemon.url}/t/{thread}")
        await page.click(f"#m{pk} a.reply-all")
        shown_to = await page.inner_text(".reply-to")
        assert "d..winfree@enron.com" in shown_to or "winfree" in shown_to.lower()
        assert KAM in shown_to and PHILLIP not in shown_to
        await page.fill("textarea[name=body]", "The macro is fixed in the East book too.")
        await page.set_input_files("input[name=files]", str(PDF))
        await page.click("form.reply button[type=submit]")
        await page.wait_for_url(f"{daemon.url}/t/{thread}#m*")
        assert "The macro is fixed in the East book too." in await page.inner_text("main")
        await page.screenshot(path=str(artifact("reply-sent.png")), full_page=True)

        # 2. The form, with JavaScript: reply to the sender alone.
        page = await sign_in(browser, daemon, PHILLIP, js=True)
        await page.goto(f"{daemon.url}/t/{thread}")
        await page.click(f"#m{pk} a.reply")
        await page.fill("textarea[name=body]", "Kam, which tab did you mean?")
        await page.click("form.reply button[type=submit]")
        await page.wait_for_url(f"{daemon.url}/t/{thread}#m*")
        assert "Kam, which tab did you mean?" in await page.inner_text("main")

        # 3. The API, from the page's own script context (session cookie + form token).
        answer = await page.evaluate(
            """async (id) => {
                const token = document.querySelector('input[name=csrf_token]').value;
                const r = await fetch('/api/v1/messages', {method: 'POST',
                  headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token},
                  body: JSON.stringify({in_reply_to: id, body: 'Sent from a script.'})});
                return [r.status, await r.json()];
            }""",
            PARENT_ID,
        )
        assert answer[0] == 201, answer
        assert answer[1]["thread_id"] == thread

        wait_for(lambda: len(handler.envelopes) == 3, "the relay to take three replies")
        mails = [(rcpts, parsed(data)) for rcpts, data in handler.envelopes]
        by_text = {first_line(m): (r, m) for r, m in mails}
        everyone, form_mail = by_text["The macro is fixed in the East book too."]
        sender_only, _ = by_text["Kam, which tab did you mean?"]
        assert sorted(everyone) == sorted(
            [KAM, "d..winfree@enron.com", "c..giron@enron.com", "scott.palmer@enron.com", ERROL]
        )
        assert sender_only == [KAM]
        for _rcpts, mail in mails:
            assert mail["In-Reply-To"] == PARENT_ID
            assert mail["References"].split()[-1] == PARENT_ID
            assert mail["Subject"] == "Re: Heads up"
            assert mail["Message-ID"].endswith(f"@{DOMAIN}>")
            assert mail["Reply-To"].addresses[0].addr_spec == PHILLIP
            assert mail["From"].addresses[0].addr_spec == "bridge@enron.com"
        [attached] = list(form_mail.iter_attachments())
        assert attached.get_filename() == "simple2.pdf"
        assert attached.get_content() == PDF.read_bytes()

        # 4. A recipient's mailbox in Dovecot: the server threads replies under the parent.
        # "Threads" holds all three, to thread them; the INBOX what Errol was sent.
        with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10) as imap:
            imap.login("bob", "bob-pw")
            imap.create_folder("Threads")
            imap.append("INBOX", PARENT.read_bytes())
            imap.append("Threads", PARENT.read_bytes())
            for rcpts, data in handler.envelopes:
                imap.append("Threads", data)
                if ERROL in rcpts:
                    imap.append("INBOX", data)
            imap.select_folder("Threads")
            threads = imap.thread("REFERENCES")
            ids = {
                uid: parsed(d[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"])["Message-ID"]
                for uid, d in imap.fetch(imap.search("ALL"), [HEADER_ID]).items()
            }
        [tree] = threads  # one thread
        root, *children = tree
        assert ids[root] == PARENT_ID
        flat = [c for child in children for c in (child if isinstance(child, tuple) else (child,))]
        assert sorted(ids[c] for c in flat) == sorted(m["Message-ID"] for _, m in mails)

        # 5. The daemon reads that mailbox: the copies merge, each reply is shown once.
        account = (
            f'[[imap.accounts]]\nname = "errol"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
            'tls = "plain"\nusername = "bob"\npassword_env = "BRIDGE_TEST_REPLY_PW"\n'
            f'owners = ["{ERROL}"]\npoll_interval = 0.5\n'
        )
        daemon.stop()
        daemon.extra += account
        daemon.write_config('["enron.com"]')
        daemon.start({"BRIDGE_TEST_REPLY_PW": "bob-pw"})
        reply_ids = [m["Message-ID"].strip("<>") for _, m in mails]

        def merged() -> bool:
            with Session(engine) as session:
                sources = session.execute(
                    select(Message.message_id, func.count(Delivery.id))
                    .join(Delivery, Delivery.message_pk == Message.id)
                    .where(Message.message_id.in_(reply_ids))
                    .group_by(Message.message_id)
                ).all()
            copies = dict(sources)
            sent_to_errol = [m["Message-ID"].strip("<>") for r, m in mails if ERROL in r]
            return len(copies) == 3 and all(copies[i] == 2 for i in sent_to_errol)

        wait_for(merged, "the IMAP copies to merge with the stored replies", 30)
        with Session(engine) as session:
            stored = session.execute(
                select(func.count()).select_from(Message).where(Message.thread_id == thread)
            ).scalar_one()
            kinds = set(
                session.execute(
                    select(Delivery.source)
                    .join(Message, Message.id == Delivery.message_pk)
                    .where(Message.message_id.in_(reply_ids))
                ).scalars()
            )
        assert stored == 4 and kinds == {"web", "imap"}
        page = await sign_in(browser, daemon, ERROL, js=False)
        await page.goto(f"{daemon.url}/t/{thread}")
        text = await page.inner_text("main")
        assert text.count("The macro is fixed in the East book too.") == 1
        assert text.count("Sent from a script.") == 1
        # The reply to the sender alone was not sent to Errol: he does not see it.
        assert "Kam, which tab did you mean?" not in text
        daemon.signal(signal.SIGTERM)
        daemon.wait(20)
    finally:
        daemon.stop()
