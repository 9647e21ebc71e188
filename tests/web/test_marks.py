"""Unread, follow, mute and rule tags in the viewer and its API.

Real mail (Enron's maildir and the lkml RapidIO thread), the real app; new
mail arrives through the real pipeline as an SMTP copy would. Each reader's
marks are theirs alone: kept pages never carry one reader's unread counts to
another, and opening a thread or marking all read shows at once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine

from bridge.i18n import catalog
from bridge.web.frame.keys import PAGE_CACHE
from tests.marks_setup import MARKS_CONFIG, OTHER, PARTY, deliver, root_thread
from tests.web.auth_helpers import form_token
from tests.web.support import ENRON, LKML, config_from, imported, sign_in, thread_id, viewer_app

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]
CONFIG = config_from(MARKS_CONFIG)
TEMPLATES = Path(__file__).resolve().parents[2] / "bridge" / "web" / "templates"


@pytest.fixture
async def site(sqlite_engine: Engine, aiohttp_client: ClientMaker) -> tuple[Client, Engine]:
    config = imported(sqlite_engine, [ENRON, LKML], MARKS_CONFIG)
    return await aiohttp_client(viewer_app(sqlite_engine, config)), sqlite_engine


def unread_of(body: str, tid: int) -> int:
    """The unread count a listing shows for thread `tid` (0: none shown)."""
    row = re.search(
        rf'<li class="thread-row"([^>]*)>\s*<a class="subject" href="/t/{tid}[#"]', body
    )
    assert row, f"thread {tid} is not listed"
    found = re.search(r'data-unread="(\d+)"', row.group(1))
    return int(found.group(1)) if found else 0


def anchor_before(body: str) -> int | None:
    """The message right after the `#unread` anchor."""
    found = re.search(r'id="unread"[^<]*</p>\s*<article[^>]* id="m(\d+)"', body)
    return int(found.group(1)) if found else None


async def get(client: Client, path: str, headers: dict[str, str]) -> str:
    response = await client.get(path, headers=headers)
    assert response.status == 200, path
    return await response.text()


async def test_opening_a_thread_lands_on_the_first_unread_and_marks_it_read(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    tid = root_thread(engine)
    me = sign_in(client.app, PARTY)
    home = await get(client, "/", me)
    count = unread_of(home, tid)
    assert count > 0 and f'href="/t/{tid}#unread"' in home
    assert f"{count} unread" in home
    thread = await get(client, f"/t/{tid}", me)
    first = anchor_before(thread)
    assert first is not None
    # The anchor is on the first message of the page: nothing was read yet.
    assert thread.index('id="unread"') < thread.index('<article class="msg')
    # Read at once: the home page (kept for this reader) shows it.
    home = await get(client, "/", me)
    assert unread_of(home, tid) == 0 and f'href="/t/{tid}"' in home
    again = await get(client, f"/t/{tid}", me)
    assert anchor_before(again) is None and 'id="unread"' not in again
    # New mail for them: one unread, and the anchor on it.
    hidden = deliver(engine, CONFIG, 1, OTHER, "hushhush")
    news = deliver(engine, CONFIG, 2, PARTY, "visible news")
    home = await get(client, "/", me)
    assert unread_of(home, tid) == 1
    page = await get(client, f"/t/{tid}", me)
    assert anchor_before(page) == news
    assert f'id="m{hidden}"' not in page
    # Tags: the one of the message they see; never the hidden reply's.
    assert ">news</a>" in page and "hush" not in page
    assert ">news</a>" in home and "hush" not in home
    # Only what they may see moves their count: the hidden reply alone does not.
    deliver(engine, CONFIG, 3, OTHER, "hushhush again")
    assert unread_of(await get(client, "/", me), tid) == 0


async def test_one_readers_marks_never_reach_another(site: tuple[Client, Engine]) -> None:
    client, engine = site
    cache = client.app[PAGE_CACHE]
    heads = thread_id(engine, "Heads up")
    alice = sign_in(client.app, "k..allen@enron.com")
    bob = sign_in(client.app, "someone.new@enron.com")
    assert unread_of(await get(client, "/", alice), heads) > 0
    bob_home = await get(client, "/", bob)
    assert unread_of(bob_home, heads) > 0
    hits = cache.hits
    assert await get(client, "/", bob) == bob_home  # kept for bob
    assert cache.hits == hits + 1
    alice_thread = await get(client, f"/t/{heads}", alice)
    assert anchor_before(alice_thread) is not None
    assert unread_of(await get(client, "/", alice), heads) == 0
    # Bob's kept home page and his thread page still show his own unread mail.
    assert unread_of(await get(client, "/", bob), heads) > 0
    bob_thread = await get(client, f"/t/{heads}", bob)
    assert anchor_before(bob_thread) == anchor_before(alice_thread)
    assert anchor_before(await get(client, f"/t/{heads}", alice)) is None
    # Follow is per reader too.
    token = form_token(alice_thread)
    done = await client.post(
        f"/t/{heads}/watch",
        data={"csrf_token": token, "watch": "follow"},
        headers=alice,
        allow_redirects=False,
    )
    assert done.status == 303 and done.headers["Location"] == f"/t/{heads}"
    assert "following" in await get(client, "/", alice)
    assert "following" not in await get(client, "/", bob)
    assert ">Follow</button>" in await get(client, f"/t/{heads}", bob)


async def test_mark_all_read_is_a_form_with_the_token(site: tuple[Client, Engine]) -> None:
    client, engine = site
    tid = root_thread(engine)
    me = sign_in(client.app, PARTY)
    home = await get(client, "/", me)
    assert unread_of(home, tid) > 0 and 'action="/read"' in home
    refused = await client.post("/read", data={}, headers=me, allow_redirects=False)
    assert refused.status == 403
    assert unread_of(await get(client, "/", me), tid) > 0
    done = await client.post(
        "/read", data={"csrf_token": form_token(home)}, headers=me, allow_redirects=False
    )
    assert done.status == 303 and done.headers["Location"] == "/"
    home = await get(client, "/", me)
    assert "data-unread" not in home
    deliver(engine, CONFIG, 4, PARTY, "visible news")
    assert unread_of(await get(client, "/", me), tid) == 1


async def test_mute_and_unmute_through_the_thread_page(site: tuple[Client, Engine]) -> None:
    client, engine = site
    member = sign_in(client.app, "outside.analyst@example.org")  # reads "gas"
    socal = thread_id(engine, "SoCal")
    page = await get(client, f"/t/{socal}", member)
    assert ">Follow</button>" in page and ">Mute</button>" in page
    token = form_token(page)

    async def watch(value: str) -> int:
        response = await client.post(
            f"/t/{socal}/watch",
            data={"csrf_token": token, "watch": value},
            headers=member,
            allow_redirects=False,
        )
        return response.status

    assert await watch("star") == 400
    assert await watch("mute") == 303
    assert f"/t/{socal}" not in await get(client, "/", member)
    assert f"/t/{socal}" not in await get(client, "/s/gas", member)
    muted = await get(client, "/?muted=1", member)
    assert f"/t/{socal}" in muted and "Muted discussions" in muted
    page = await get(client, f"/t/{socal}", member)
    assert ">Unmute</button>" in page and "You muted this discussion" in page
    assert await watch("") == 303
    assert f"/t/{socal}" in await get(client, "/", member)
    assert f"/t/{socal}" not in await get(client, "/?muted=1", member)


async def test_spaces_filter_by_tag_and_pages_show_tags(site: tuple[Client, Engine]) -> None:
    client, engine = site
    member = sign_in(client.app, "outside.analyst@example.org")
    socal = thread_id(engine, "SoCal")
    # Search shows the reader's unread mail, and each thread's tags.
    found = await get(client, "/search?q=tag:pipeline", member)
    assert f"/t/{socal}#unread" in found and ">Pipeline</a>" in found
    space = await get(client, "/s/gas", member)
    assert 'href="/s/gas?tag=Pipeline"' in space
    tagged = await get(client, "/s/gas?tag=Pipeline", member)
    listed = set(re.findall(r'class="subject" href="/t/(\d+)', tagged))
    assert listed == {str(socal)}
    assert 'value="Pipeline"' in tagged  # the filter form keeps it
    assert "0 discussions" in await get(client, "/s/gas?tag=nothing-like-it", member)
    thread = await get(client, f"/t/{socal}", member)
    assert 'href="/s/gas?tag=Pipeline"' in thread
    read = await get(client, "/search?q=tag:pipeline", member)
    assert f"/t/{socal}#unread" not in read and ">Pipeline</a>" in read


async def test_the_api_shows_and_sets_the_readers_marks(site: tuple[Client, Engine]) -> None:
    client, engine = site
    tid = root_thread(engine)
    me = sign_in(client.app, PARTY)
    token = form_token(await get(client, "/settings", me))
    listed = await (await client.get("/api/v1/threads?limit=100", headers=me)).json()
    row = next(t for t in listed["threads"] if t["id"] == tid)
    assert row["unread"] > 0 and row["watch"] == "none" and isinstance(row["tags"], list)
    no_token = await client.post(f"/api/v1/threads/{tid}/watch", json={"watch": "mute"}, headers=me)
    assert no_token.status == 403
    bad = await client.post(
        f"/api/v1/threads/{tid}/watch",
        json={"watch": "loud"},
        headers={**me, "X-CSRF-Token": token},
    )
    assert bad.status == 400
    muted = await client.post(
        f"/api/v1/threads/{tid}/watch",
        json={"watch": "mute"},
        headers={**me, "X-CSRF-Token": token},
    )
    assert muted.status == 200 and await muted.json() == {"thread_id": tid, "watch": "mute"}
    listed = await (await client.get("/api/v1/threads?limit=100", headers=me)).json()
    assert tid not in {t["id"] for t in listed["threads"]}
    only = await (await client.get("/api/v1/threads?muted=true", headers=me)).json()
    assert [t["id"] for t in only["threads"]] == [tid] and only["threads"][0]["watch"] == "mute"
    read = await client.post(f"/api/v1/threads/{tid}/read", headers={**me, "X-CSRF-Token": token})
    assert read.status == 200 and await read.json() == {"thread_id": tid, "unread": 0}
    only = await (await client.get("/api/v1/threads?muted=true", headers=me)).json()
    assert only["threads"][0]["unread"] == 0
    deliver(engine, CONFIG, 5, PARTY, "visible news")
    only = await (await client.get("/api/v1/threads?muted=true", headers=me)).json()
    assert only["threads"][0]["unread"] == 1 and "news" in only["threads"][0]["tags"]
    everything = await client.post("/api/v1/read", headers={**me, "X-CSRF-Token": token})
    assert everything.status == 200
    only = await (await client.get("/api/v1/threads?muted=true", headers=me)).json()
    assert only["threads"][0]["unread"] == 0
    tagged = await (await client.get("/api/v1/threads?tag=news&muted=true", headers=me)).json()
    assert [t["id"] for t in tagged["threads"]] == [tid]


def test_every_string_of_the_reading_pages_has_a_french_translation() -> None:
    french = catalog("fr")
    missing = set()
    for template in TEMPLATES.glob("*.html"):
        if template.name.startswith("admin"):
            continue
        for found in re.finditer(r"_\('((?:[^'\\]|\\.)*)'\)", template.read_text()):
            if found.group(1) not in french:
                missing.add((template.name, found.group(1)))
    assert not missing


async def test_marks_speak_french(site: tuple[Client, Engine]) -> None:
    client, engine = site
    tid = root_thread(engine)
    me = {**sign_in(client.app, PARTY), "Accept-Language": "fr"}
    home = await get(client, "/", me)
    assert "Tout marquer comme lu" in home and "non lus" in home
    page = await get(client, f"/t/{tid}", me)
    assert "Nouveau depuis votre dernière visite" in page and ">Suivre</button>" in page
