"""Kept pages: served again while nothing changed, never stale, never another reader's.

Real mail (Enron's maildir and the lkml RapidIO thread), the real app; new
mail arrives through the real pipeline as an SMTP copy would.
"""

from __future__ import annotations

import email
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.core.message import Provenance, RawMessage
from bridge.core.normalize import normalize_message_id
from bridge.store.read.reading import find_thread_id
from bridge.store.tables import Message
from bridge.web.frame.keys import PAGE_CACHE
from tests.web.support import ENRON, LKML, imported, sign_in, viewer_app

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]

ROOT = LKML / "1382298770.004581.eml"
PARTY = "thomas.moll@sysgo.com"  # Cc on the RapidIO thread
OUTSIDER = "nobody@example.net"
WORD = "quokkaphrase"


@pytest.fixture
async def site(sqlite_engine: Engine, aiohttp_client: ClientMaker) -> tuple[Client, Engine]:
    config = imported(sqlite_engine, [ENRON, LKML])
    return await aiohttp_client(viewer_app(sqlite_engine, config)), sqlite_engine


def root_thread(engine: Engine) -> int:
    with Session(engine) as session:
        return find_thread_id(session, root_id())


def root_id() -> str:
    value = normalize_message_id(email.message_from_bytes(ROOT.read_bytes())["Message-ID"])
    assert value
    return value


def deliver_reply(engine: Engine, n: int) -> None:
    """A reply to the thread's root, to the party, stored as an SMTP delivery."""
    data = (
        f"From: Alexandre Bounine <alexandre.bounine@idt.com>\r\n"
        f"To: {PARTY}\r\nSubject: Re: RapidIO\r\n"
        f"Message-ID: <cache-test-{n}@example.com>\r\nIn-Reply-To: <{root_id()}>\r\n"
        f"References: <{root_id()}>\r\nDate: Mon, 21 Oct 2013 12:00:0{n} +0000\r\n\r\n"
        f"A new reply mentioning {WORD} number {n}.\r\n"
    ).encode()
    raw = RawMessage(data, Provenance("smtp", "test", key=f"cache-{n}", envelope_to=(PARTY,)))
    outcome = pipeline.store_alone(
        engine, pipeline.prepare(raw), datetime.now(UTC), pipeline.Tally()
    )
    assert outcome is pipeline.Outcome.STORED


async def page(client: Client, path: str, who: str) -> tuple[int, str]:
    response = await client.get(path, headers=sign_in(client.app, who))
    return response.status, await response.text()


async def test_a_thread_page_is_kept_until_its_thread_changes(site: tuple[Client, Engine]) -> None:
    client, engine = site
    cache = client.app[PAGE_CACHE]
    thread = root_thread(engine)
    path = f"/t/{thread}"
    headers = sign_in(client.app, PARTY)  # one session: its pages may be kept
    # The first visit shows where unread mail starts and marks the thread read.
    assert (await client.get(path, headers=headers)).status == 200
    first = await client.get(path, headers=headers)
    assert first.status == 200
    body = await first.text()
    assert WORD not in body
    hits = cache.hits
    again = await client.get(path, headers=headers)
    assert await again.text() == body
    assert cache.hits == hits + 1
    deliver_reply(engine, 1)
    changed = await client.get(path, headers=headers)
    assert f"{WORD} number 1" in await changed.text()


async def test_search_results_follow_new_mail(site: tuple[Client, Engine]) -> None:
    client, engine = site
    headers = sign_in(client.app, PARTY)
    before = await client.get(f"/search?q={WORD}", headers=headers)
    assert f"{WORD} number" not in await before.text()
    await client.get(f"/search?q={WORD}", headers=headers)  # kept
    deliver_reply(engine, 2)
    after = await client.get(f"/search?q={WORD}", headers=headers)
    assert f"{WORD}</mark> number 2" in await after.text()


async def test_a_kept_page_never_reaches_another_reader(site: tuple[Client, Engine]) -> None:
    client, engine = site
    thread = root_thread(engine)
    status, body = await page(client, f"/t/{thread}", PARTY)
    assert status == 200 and "RapidIO" in body
    missing_status, _ = await page(client, "/t/999999", OUTSIDER)
    hidden_status, hidden = await page(client, f"/t/{thread}", OUTSIDER)
    assert (hidden_status, missing_status) == (404, 404)
    assert "RapidIO" not in hidden
    # The home page of each reader lists their own threads, kept apart.
    _, party_home = await page(client, "/", PARTY)
    _, outsider_home = await page(client, "/", OUTSIDER)
    assert f"/t/{thread}" in party_home and f"/t/{thread}" not in outsider_home


async def test_readers_who_see_the_same_messages_share_a_body(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    cache = client.app[PAGE_CACHE]
    with Session(engine) as session:
        heads = session.scalar(
            select(Message.thread_id).where(Message.subject.startswith("Heads up")).limit(1)
        )
    first_status, first = await page(client, f"/t/{heads}", "someone.new@enron.com")
    hits = cache.hits
    second_status, second = await page(client, f"/t/{heads}", "another.trader@enron.com")
    assert (first_status, second_status) == (200, 200)
    assert cache.hits == hits + 1  # two staff readers of an open space: one body
    assert body_of(first) == body_of(second)
    # In the RapidIO thread the party sees Neuling's private messages; a space
    # member who was no party sees none: never the same body.
    thread = root_thread(engine)
    _, party = await page(client, f"/t/{thread}", PARTY)
    status, member = await page(client, f"/t/{thread}", "observer@example.org")
    if status == 200:
        assert body_of(member) != body_of(party)
    assert "mikey@neuling.org" in party and "mikey@neuling.org" not in member


def body_of(page: str) -> str:
    """The thread itself: the page's main part without the reader's own feed link."""
    main = page.split("<main", 1)[1].split("</main>", 1)[0]
    # The follow/mute form carries the session's token: it is the shell's, not the body's.
    main = re.sub(r'<form class="inline watch".*?</form>', "", main, flags=re.S)
    return main.split('<p class="feed">', 1)[0]
