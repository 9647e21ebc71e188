"""Replying from the viewer, over real Enron mail, on SQLite and PostgreSQL.

The reply page and form (no JavaScript), the API, and what they leave in the
store and the outbox: the reply is in its thread at once, its mail carries
the threading headers and the right recipients, and a person who may not see
a message cannot answer it (404, exactly as for one that does not exist).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html import unescape

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.core.message import Provenance, RawMessage
from bridge.store.tables import Delivery, Message, MessageId, Outbox
from bridge.web.frame.keys import CONFIG
from tests.web.support import CONFIG as BASE_CONFIG
from tests.web.support import ENRON, config_from, imported, queued_mail, sign_in, viewer_app

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]

LIMITS = "replies_per_minute = 3\nmax_reply_bytes = 2000\nmax_upload_bytes = 300000\n"
IDENTITY = 'message_id_domain = "bridge.enron.com"\naddress = "bridge@enron.com"\n'
CONFIG_TEXT = BASE_CONFIG.replace("[web]\n", "[web]\n" + LIMITS).replace(
    "[bridge]\n", "[bridge]\n" + IDENTITY
)
# Terry's reply-all to Bill's "SoCal Gas CPUC Proceeding" (in Bill's inbox).
PARENT_ID = "16477742.1075861201271.JavaMail.evans@thyme"
BILL = "bill.rapp@enron.com"
TERRY = "terry.kowalke@enron.com"
OUTSIDER = "mallory@outside.example"


@pytest.fixture
async def site(engine: Engine, aiohttp_client: ClientMaker) -> tuple[Client, Engine]:
    config = imported(engine, [ENRON], CONFIG_TEXT)
    return await aiohttp_client(viewer_app(engine, config)), engine


def parent_of(engine: Engine) -> tuple[int, int]:
    """(pk, thread) of Terry's message: two inboxes hold it, stored once under one id."""
    with Session(engine) as session:
        row = session.execute(
            select(Message.id, Message.thread_id)
            .join(MessageId, MessageId.message_pk == Message.id)
            .where(MessageId.message_id == PARENT_ID)
        ).one()
    return int(row.id), int(row.thread_id)


def stored_id(engine: Engine, pk: int) -> str:
    with Session(engine) as session:
        return str(session.get(Message, pk).message_id)  # type: ignore[union-attr]


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no form token"
    return found.group(1)


async def reply_page(client: Client, who: str, thread: int, pk: int, mode: str = "all") -> str:
    answer = await client.get(
        f"/t/{thread}/reply?message={pk}&mode={mode}", headers=sign_in(client.app, who)
    )
    assert answer.status == 200, await answer.text()
    return await answer.text()


async def send(
    client: Client, who: str, thread: int, pk: int, body: str, **extra: object
) -> tuple[int, str, str]:
    headers = sign_in(client.app, who)
    page = await client.get(f"/t/{thread}/reply?message={pk}", headers=headers)
    token = csrf(await page.text()) if page.status == 200 else "x"
    form = FormData()
    for name, value in {"csrf_token": token, "message": str(pk), "mode": "all", **extra}.items():
        if name != "files":
            form.add_field(name, str(value))
    for filename, data in extra.get("files", []):  # type: ignore[attr-defined]
        form.add_field("files", data, filename=filename, content_type="application/pdf")
    form.add_field("body", body)
    answer = await client.post(
        f"/t/{thread}/reply", data=form, headers=headers, allow_redirects=False
    )
    return answer.status, answer.headers.get("Location", ""), await answer.text()


async def test_the_reply_page_lists_who_gets_it(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    page = unescape(await reply_page(client, BILL, thread, pk))
    to = re.search(r'<dd class="reply-to">(.*?)</dd>', page, re.S)
    assert to is not None
    assert TERRY in to.group(1) and "lindy.donoho@enron.com" in to.group(1)
    assert BILL not in to.group(1), "the replier is never a recipient"
    assert "Re: SoCal Gas CPUC Proceeding" in page
    only = unescape(await reply_page(client, BILL, thread, pk, "sender"))
    to_sender = re.search(r'<dd class="reply-to">(.*?)</dd>', only, re.S)
    assert to_sender is not None and TERRY in to_sender.group(1)
    assert "lindy.donoho" not in to_sender.group(1)


async def test_a_reply_is_stored_at_once_and_queued_with_threading_headers(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    status, location, _ = await send(client, BILL, thread, pk, "Agreed, let us file by Friday.")
    assert status == 303
    assert location.startswith(f"/t/{thread}#m")
    [(recipients, mail)] = queued_mail(engine)
    parent_id = f"<{stored_id(engine, pk)}>"
    assert mail["In-Reply-To"] == parent_id
    assert mail["References"].split()[-1] == parent_id
    assert mail["Subject"] == "Re: SoCal Gas CPUC Proceeding"
    assert mail["From"].addresses[0].addr_spec == "bridge@enron.com"
    assert "via Bridge" in mail["From"].addresses[0].display_name
    assert mail["Reply-To"].addresses[0].addr_spec == BILL
    assert mail["Auto-Submitted"] is None, "a person's reply is not automatic"
    assert mail["Message-ID"].endswith("@bridge.enron.com>")
    assert TERRY in recipients and BILL not in recipients
    text = mail.get_body(("plain",))
    assert text is not None and text.get_param("format") == "flowed"
    content = text.get_content()
    assert content.startswith("Agreed, let us file by Friday.")
    assert "terry.kowalke" in content or "wrote:" in content
    assert re.search(r"^> ", content, re.M), "the parent's words are quoted"
    # In the thread at once, for the replier and for a recipient.
    for who in (BILL, TERRY):
        page = await client.get(f"/t/{thread}", headers=sign_in(client.app, who))
        assert "Agreed, let us file by Friday." in await page.text()
    with Session(engine) as session:
        stored = session.execute(
            select(Message.thread_id, Message.parent_id).where(
                Message.message_id == mail["Message-ID"].strip("<>")
            )
        ).one()
    assert stored.thread_id == thread and stored.parent_id == pk


async def test_its_copy_coming_back_merges_and_is_shown_once(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    await send(client, BILL, thread, pk, "One copy only, please.")
    [(_, mail)] = queued_mail(engine)
    with Session(engine) as session:
        data = session.execute(select(Outbox.data)).scalar_one()
    # The relay's copy, as a recipient's server delivers it back.
    received = b"Received: from relay.enron.com by mx.enron.com; Fri, 5 Dec 2026 10:00:00 +0000"
    back = received + b"\r\n" + data
    raw = RawMessage(back, Provenance("smtp", "test", TERRY, "queue-1", None, (TERRY,)))
    config = client.app[CONFIG]()
    item = pipeline.prepare(raw, rules=config.ruleset)
    with Session(engine) as session, session.begin():
        [outcome] = pipeline.store_batch(session, [item], datetime.now(UTC))
    assert outcome is pipeline.Outcome.MERGED
    with Session(engine) as session:
        mid = mail["Message-ID"].strip("<>")
        count = session.execute(
            select(func.count()).select_from(Message).where(Message.message_id.startswith(mid))
        ).scalar_one()
        sources = set(
            session.execute(
                select(Delivery.source)
                .join(Message, Message.id == Delivery.message_pk)
                .where(Message.message_id == mid)
            ).scalars()
        )
    assert count == 1 and sources == {"web", "smtp"}
    page = await (await client.get(f"/t/{thread}", headers=sign_in(client.app, TERRY))).text()
    assert page.count("One copy only, please.") == 1


async def test_nobody_answers_a_message_they_may_not_see(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    outsider = sign_in(client.app, OUTSIDER)
    hidden = await client.get(f"/t/{thread}/reply?message={pk}", headers=outsider)
    missing = await client.get(f"/t/{thread}/reply?message=999999", headers=outsider)
    assert hidden.status == missing.status == 404
    # The same page, but for the asked URL it names (the language switch's return path).
    assert (await hidden.text()).replace(f"message={pk}", "message=N") == (
        await missing.text()
    ).replace("message=999999", "message=N")
    status, _, _ = await send(client, OUTSIDER, thread, pk, "Let me in")
    assert status in (403, 404)
    assert queued_mail(engine) == []


async def test_a_message_is_answered_from_its_own_thread_only(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    headers = sign_in(client.app, BILL)
    page = await client.get(f"/t/{thread}/reply?message={pk}", headers=headers)
    token = csrf(await page.text())
    with Session(engine) as session:
        other = session.execute(
            select(Message.thread_id).where(Message.thread_id != thread).limit(1)
        ).scalar_one()
    form = {"csrf_token": token, "message": str(pk), "mode": "all", "body": "Wrong page"}
    answer = await client.post(
        f"/t/{other}/reply", data=form, headers=headers, allow_redirects=False
    )
    assert answer.status == 404
    assert queued_mail(engine) == []


async def test_refusals_send_nothing(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    status, _, page = await send(client, BILL, thread, pk, "x" * 2001)
    assert status == 413 and "too long" in page
    status, _, page = await send(client, BILL, thread, pk, "   ")
    assert status == 400
    status, _, page = await send(
        client, BILL, thread, pk, "Heavy", files=[("big.pdf", b"%PDF" + b"0" * 300_000)]
    )
    assert status == 413 and "too large" in page
    assert queued_mail(engine) == []
    # Three a minute, then refused with a clear message.
    for n in range(3):
        status, _, _ = await send(client, BILL, thread, pk, f"Reply number {n}")
        assert status == 303
    status, _, page = await send(client, BILL, thread, pk, "One too many")
    assert status == 429 and "Too many replies" in page
    assert len(queued_mail(engine)) == 3


async def test_a_file_beyond_the_small_form_limit_goes_as_an_attachment(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    data = b"%PDF-1.4\n" + bytes(range(256)) * 800  # 200 KB: over the 64 KB of other forms
    status, _, _ = await send(client, BILL, thread, pk, "The filing", files=[("filing.pdf", data)])
    assert status == 303
    [(_, mail)] = queued_mail(engine)
    [part] = list(mail.iter_attachments())
    assert part.get_filename() == "filing.pdf" and part.get_content() == data


async def test_a_form_without_its_token_is_refused(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    status, _, _ = await send(client, BILL, thread, pk, "Forged", csrf_token="not-the-token")
    assert status == 403
    assert queued_mail(engine) == []


async def test_french_readers_write_a_french_attribution(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    client.session.cookie_jar.update_cookies({"lang": "fr"})
    headers = {**sign_in(client.app, BILL), "Accept-Language": "fr"}
    page = await client.get(f"/t/{thread}/reply?message={pk}", headers=headers)
    text = await page.text()
    assert "Répondre à tous" in text
    form = FormData()
    form.add_field("csrf_token", csrf(text))
    form.add_field("message", str(pk))
    form.add_field("body", "D'accord.")
    answer = await client.post(
        f"/t/{thread}/reply", data=form, headers=headers, allow_redirects=False
    )
    assert answer.status == 303
    [(_, mail)] = queued_mail(engine)
    content = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert re.search(r"^Le .* a écrit :\r?$", content, re.M), content


async def test_the_api_replies_and_refuses_feed_tokens(site: tuple[Client, Engine]) -> None:
    client, engine = site
    pk, thread = parent_of(engine)
    headers = sign_in(client.app, BILL)
    page = await client.get(f"/t/{thread}/reply?message={pk}", headers=headers)
    token = csrf(await page.text())
    body = {"in_reply_to": f"<{PARENT_ID}>", "body": "From a script", "mode": "sender"}
    answer = await client.post(
        "/api/v1/messages", json=body, headers={**headers, "X-CSRF-Token": token}
    )
    assert answer.status == 201, await answer.text()
    made = await answer.json()
    assert made["thread_id"] == thread and made["message_id"].endswith("@bridge.enron.com")
    [(recipients, _mail)] = queued_mail(engine)
    assert recipients == [TERRY], "mode sender answers the sender alone"
    got = await client.get(f"/api/v1/messages/{made['message_id']}", headers=headers)
    assert got.status == 200
    forged = await client.post(
        "/api/v1/messages", json=body, headers={"Authorization": "Bearer anything"}
    )
    assert forged.status == 403
    hidden = await client.post(
        "/api/v1/messages",
        json=body,
        headers={**sign_in(client.app, OUTSIDER), "X-CSRF-Token": "x"},
    )
    assert hidden.status == 403  # no form token of theirs: refused before anything is read
    assert len(queued_mail(engine)) == 1


def test_send_as_person_puts_the_reader_in_from(engine: Engine) -> None:
    from bridge.outbound.replies import send_reply
    from tests.web.support import viewer_of

    config = imported(engine, [ENRON], CONFIG_TEXT + '\n[outbound]\nsend_as = "person"\n')
    pk, _thread = parent_of(engine)
    with Session(engine) as session, session.begin():
        send_reply(
            session,
            config,
            viewer_of(config, BILL),
            parent_pk=pk,
            text="As myself",
            mode="all",
            now=datetime.now(UTC),
        )
    [(_, mail)] = queued_mail(engine)
    assert mail["From"].addresses[0].addr_spec == BILL
    assert mail["Reply-To"] is None
    assert config_from(CONFIG_TEXT).outbound.send_as == "bridge"


def test_addresses_no_mail_can_go_to_are_left_out() -> None:
    """A list archive's mangled From ("r|p|ey@end|ng") is not a recipient, nor an error."""
    from bridge.core.message import Address
    from bridge.outbound.replies import Parent, recipients

    mangled = Address("Brian Ripley", "r|p|ey@end|ng")
    kept = Address("Kurt Hornik", "kurt.hornik@wu.ac.at")
    parent = Parent(
        pk=1,
        thread_id=1,
        message_id="<a@example.com>",
        subject="R CMD check",
        date=None,
        sender=(mangled,),
        reply_to=(),
        to=(Address("", "r-devel@end|ng"),),
        cc=(kept,),
        references=(),
        in_reply_to=(),
        new_text="",
    )
    config = config_from(CONFIG_TEXT)
    assert recipients(config, parent, BILL, "all").everyone == (kept,)
    assert recipients(config, parent, BILL, "sender").everyone == ()
