"""Atom feeds of spaces and threads, on real imported mail, read with the stdlib XML parser.

Checked: the document is well-formed Atom 1.0 with the elements RFC 4287
requires, entries are the messages the token's owner may see (newest
first), their content is the new text as plain text (markup escaped,
characters XML cannot carry dropped), and every refusal (no token, a bad
or revoked one, a hidden thread, a space the owner may not read) is the
same 404 as something missing.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from bridge.web.account.auth_store import bump_feed_epoch, feed_token
from bridge.web.frame.keys import SIGNER, STORE
from tests.conftest import DATA
from tests.web.support import ENRON, LKML, imported, sign_in, viewer_app

A = "{http://www.w3.org/2005/Atom}"
MARKUP = DATA / "web-api" / "markup.eml"
ClientMaker = Any


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Config]]:
    root = tmp_path_factory.mktemp("feeds")
    (root / "markup").mkdir()
    shutil.copy(MARKUP, root / "markup" / "markup.eml")
    engine = make_engine(str(root / "bridge.db"))
    upgrade(engine)
    config = imported(engine, [ENRON, LKML, root / "markup"])
    yield engine, config
    engine.dispose()


@pytest.fixture
async def client(store: tuple[Engine, Config], aiohttp_client: ClientMaker) -> TestClient:
    engine, config = store
    return await aiohttp_client(viewer_app(engine, config))


def token(client: TestClient, who: str, epoch: int = 0) -> str:
    return feed_token(client.app[SIGNER], who, epoch)


# The error page's language switch carries a form token and the page's own URL.
PER_REQUEST = re.compile(rb'name="(csrf_token|next)" value="[^"]*"')


async def fetch(client: TestClient, path: str, token_value: str | None) -> tuple[int, bytes]:
    """Status and body (the error page's form token and echoed URL blanked)."""
    params = {"token": token_value} if token_value is not None else {}
    response = await client.get(path, params=params)
    return response.status, PER_REQUEST.sub(rb'name="\1"', await response.read())


async def api(client: TestClient, path: str, who: str) -> Any:
    response = await client.get(path, headers=sign_in(client.app, who))
    assert response.status == 200
    return await response.json()


async def thread_id(client: TestClient, who: str, subject: str) -> int:
    listing = await api(client, "/api/v1/threads", who)
    return int(next(t["id"] for t in listing["threads"] if t["subject"] == subject))


def valid_atom(body: bytes) -> ET.Element:
    """Parse with the stdlib and check what RFC 4287 requires of a feed and its entries."""
    feed = ET.fromstring(body)
    assert feed.tag == f"{A}feed"
    for name in ("id", "title", "updated"):
        assert (feed.findtext(f"{A}{name}") or "").strip(), name
    datetime.fromisoformat(feed.findtext(f"{A}updated", "").replace("Z", "+00:00"))
    has_author = feed.find(f"{A}author/{A}name") is not None
    for entry in feed.findall(f"{A}entry"):
        for name in ("id", "title", "updated"):
            assert (entry.findtext(f"{A}{name}") or "").strip(), name
        link = entry.find(f"{A}link")
        assert link is not None and link.get("href", "").startswith("http")
        assert has_author or entry.find(f"{A}author/{A}name") is not None
        content = entry.find(f"{A}content")
        assert content is not None and content.get("type") == "text"
    ids = [e.findtext(f"{A}id") for e in feed.findall(f"{A}entry")]
    assert len(ids) == len(set(ids))
    return feed


async def test_a_thread_feed_holds_its_messages_newest_first(client: TestClient) -> None:
    who = "kam.keiser@enron.com"
    tid = await thread_id(client, who, "Heads up")
    status, body = await fetch(client, f"/feeds/t/{tid}.atom", token(client, who))
    assert status == 200
    feed = valid_atom(body)
    detail = await api(client, f"/api/v1/threads/{tid}", who)
    entries = feed.findall(f"{A}entry")
    assert len(entries) == len(detail["messages"]) == 5
    updated = [e.findtext(f"{A}updated") for e in entries]
    assert updated == sorted(updated, reverse=True)
    texts = {m["new_text"] for m in detail["messages"]}
    assert {e.findtext(f"{A}content") for e in entries} == texts
    links = {e.find(f"{A}link").get("href", "") for e in entries}  # type: ignore[union-attr]
    assert links == {f"http://127.0.0.1:8080/t/{tid}#m{m['id']}" for m in detail["messages"]}


async def test_markup_is_text_and_characters_xml_cannot_carry_are_dropped(
    client: TestClient,
) -> None:
    who = "d..winfree@enron.com"
    tid = await thread_id(client, who, 'Markup <b>in</b> a subject & "quotes"')
    status, body = await fetch(client, f"/feeds/t/{tid}.atom", token(client, who))
    assert status == 200
    assert b"<script>" not in body and b"&lt;script&gt;" in body
    feed = valid_atom(body)
    (entry,) = feed.findall(f"{A}entry")
    content = entry.findtext(f"{A}content") or ""
    assert '<script>alert("feed")</script> & <b>bold</b>.' in content
    assert "\x0c" not in content and "\x07" not in content and "A form feed" in content
    assert entry.findtext(f"{A}title") == 'Markup <b>in</b> a subject & "quotes"'


async def test_a_space_feed_holds_what_its_reader_may_see(client: TestClient) -> None:
    staff = "someone.new@enron.com"  # reads "trading" (open to staff) only
    status, body = await fetch(client, "/feeds/s/trading.atom", token(client, staff))
    assert status == 200
    feed = valid_atom(body)
    assert feed.findtext(f"{A}title") == "Trading"
    titles = {e.findtext(f"{A}title") for e in feed.findall(f"{A}entry")}
    assert titles == {"Heads up", "RE: Heads up"}
    assert len(feed.findall(f"{A}entry")) == 5
    member = "outside.analyst@example.org"  # "gas": SoCal; West is gas too, but private
    _, gas = await fetch(client, "/feeds/s/gas.atom", token(client, member))
    titles = {e.findtext(f"{A}title") for e in valid_atom(gas).findall(f"{A}entry")}
    assert titles == {"SoCal Gas CPUC Proceeding", "RE: SoCal Gas CPUC Proceeding"}


async def test_a_private_thread_feed_holds_only_the_owners_messages(client: TestClient) -> None:
    who = "r58472@freescale.com"
    listing = await api(client, "/api/v1/threads", who)
    (rio,) = listing["threads"]
    _, body = await fetch(client, f"/feeds/t/{rio['id']}.atom", token(client, who))
    entries = valid_atom(body).findall(f"{A}entry")
    assert len(entries) == 3
    assert not any("neuling.org" in (e.findtext(f"{A}id") or "") for e in entries)


async def test_every_refusal_is_the_404_of_something_missing(client: TestClient) -> None:
    who = "someone.new@enron.com"
    good = token(client, who)
    missing_thread = await fetch(client, "/feeds/t/987654.atom", good)
    missing_space = await fetch(client, "/feeds/s/no-such-space.atom", good)
    assert missing_thread[0] == missing_space[0] == 404
    heads = await thread_id(client, who, "Heads up")
    west = await thread_id(client, "k..allen@enron.com", "RE: West Position")
    assert await fetch(client, f"/feeds/t/{west}.atom", good) == missing_thread
    assert await fetch(client, "/feeds/s/gas.atom", good) == missing_space
    for bad in (None, "", "nonsense", good + "x", token(client, who, epoch=3)):
        assert await fetch(client, f"/feeds/t/{heads}.atom", bad) == missing_thread
        assert await fetch(client, "/feeds/s/trading.atom", bad) == missing_space
    # A token signed for another purpose is not a feed token.
    session_like = client.app[SIGNER].sign("session", [who, 0])
    assert await fetch(client, f"/feeds/t/{heads}.atom", session_like) == missing_thread


async def test_a_new_epoch_revokes_older_feed_links(client: TestClient) -> None:
    who = "kam.keiser@enron.com"
    tid = await thread_id(client, who, "Heads up")
    old = token(client, who)
    assert (await fetch(client, f"/feeds/t/{tid}.atom", old))[0] == 200
    with Session(client.app[STORE].engine) as session, session.begin():
        epoch = bump_feed_epoch(session, who, datetime.now(UTC))
    assert (await fetch(client, f"/feeds/t/{tid}.atom", old))[0] == 404
    assert (await fetch(client, f"/feeds/t/{tid}.atom", token(client, who, epoch)))[0] == 200


async def test_feeds_answer_alike_on_each_backend(
    engine: Engine, tmp_path: Path, aiohttp_client: ClientMaker
) -> None:
    config = imported(engine, [ENRON])
    client = await aiohttp_client(viewer_app(engine, config))
    who = "someone.new@enron.com"
    status, body = await fetch(client, "/feeds/s/trading.atom", token(client, who))
    assert status == 200 and len(valid_atom(body).findall(f"{A}entry")) == 5


async def test_thread_and_space_pages_link_the_readers_own_feeds(client: TestClient) -> None:
    who = "heather.dunton@enron.com"  # staff: reads the "trading" space
    tid = await thread_id(client, who, "Heads up")
    for page in (f"/t/{tid}", "/s/trading"):
        response = await client.get(page, headers=sign_in(client.app, who))
        body = await response.text()
        found = re.search(
            r'<link rel="alternate" type="application/atom\+xml"[^>]* href="([^"]+)"', body
        )
        assert found, page
        url = found.group(1).replace("&amp;", "&")
        path = url.split("://", 1)[1].split("/", 1)[1]
        feed = await client.get("/" + path)  # no cookie: the token alone
        assert feed.status == 200, page
        valid_atom(await feed.read())
