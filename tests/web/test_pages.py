"""The reading pages over real imported mail, for readers who see different things."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.store.read import browse
from bridge.store.tables import Message, Thread, ThreadRedirect
from bridge.store.visibility.access import visible_messages
from bridge.web.frame.keys import CONFIG
from tests.web.support import ENRON, LKML, imported, sign_in, thread_id, viewer_app, viewer_of

GHOST = LKML.parent / "ghost-root"
Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def site(sqlite_engine: Engine, aiohttp_client: ClientMaker) -> tuple[Client, Engine]:
    config = imported(sqlite_engine, [ENRON, LKML, GHOST])
    app = viewer_app(sqlite_engine, config)
    return await aiohttp_client(app), sqlite_engine


async def get(client: Client, path: str, who: str | None, **headers: str) -> tuple[int, str]:
    sent = dict(sign_in(client.app, who)) if who else {}
    sent.update(headers)
    response = await client.get(path, headers=sent, allow_redirects=False)
    return response.status, await response.text()


def same_page(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Same status and body, but for the per-session form token and the page's own path."""

    def plain(body: str) -> str:
        body = re.sub(r'name="csrf_token" value="[^"]*"', "", body)
        return re.sub(r'name="next" value="[^"]*"', "", body)

    return a[0] == b[0] and plain(a[1]) == plain(b[1])


def thread_links(body: str) -> set[int]:
    return {int(n) for n in re.findall(r'class="subject" href="/t/(\d+)(?:#unread)?"', body)}


async def test_home_shows_each_reader_their_threads(site: tuple[Client, Engine]) -> None:
    client, engine = site
    west, heads = thread_id(engine, "RE: West Position"), thread_id(engine, "Heads up")
    status, body = await get(client, "/", "k..allen@enron.com")
    assert status == 200
    assert thread_links(body) == {west, heads}
    assert 'href="/s/trading"' in body  # his space (open to staff)
    assert 'href="/s/gas"' not in body.split('class="spaces"')[1]
    status, body = await get(client, "/", "someone.new@enron.com")
    assert thread_links(body) == {heads}
    status, body = await get(client, "/", "nobody@example.net")
    assert thread_links(body) == set()


async def test_signed_out_readers_are_sent_to_sign_in(site: tuple[Client, Engine]) -> None:
    client, _ = site
    response = await client.get("/t/1?view=flat", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/login?next=")


async def test_space_page_filters_and_404s(site: tuple[Client, Engine]) -> None:
    client, engine = site
    heads = thread_id(engine, "Heads up")
    status, body = await get(client, "/s/trading", "someone.new@enron.com")
    assert status == 200 and thread_links(body) == {heads}
    status, body = await get(client, "/s/trading?from=kam.keiser%40enron.com", "pallen@enron.com")
    assert thread_links(body) == {heads}
    status, body = await get(client, "/s/trading?from=nobody%40enron.com", "pallen@enron.com")
    assert status == 200 and thread_links(body) == set()
    status, body = await get(client, "/s/trading?after=2002-02-01", "pallen@enron.com")
    assert thread_links(body) == set()
    status, body = await get(client, "/s/trading?before=2002-02-01", "pallen@enron.com")
    assert thread_links(body) == {heads}
    # Not a member of "gas", and an unknown space: the same 404.
    hidden = await get(client, "/s/gas", "someone.new@enron.com")
    missing = await get(client, "/s/nowhere", "someone.new@enron.com")
    assert hidden[0] == 404 and same_page(hidden, missing)
    for bad in ("?page=0", "?page=x", "?page=99999999999", "?after=yesterday"):
        assert (await get(client, "/s/trading" + bad, "pallen@enron.com"))[0] == 400


async def test_thread_page_for_two_readers(site: tuple[Client, Engine]) -> None:
    client, engine = site
    rio = thread_id(engine, "Re: [PATCH v2 5/7]")
    with Session(engine) as session:
        moll = visible_messages(session, viewer_of(config_of(client), "thomas.moll@sysgo.com"), rio)
        neuling = visible_messages(session, viewer_of(config_of(client), "mikey@neuling.org"), rio)
    assert 0 < len(neuling) < len(moll)
    for who, expected in (("thomas.moll@sysgo.com", moll), ("mikey@neuling.org", neuling)):
        status, body = await get(client, f"/t/{rio}", who)
        assert status == 200
        assert set(map(int, re.findall(r'<article class="msg[^"]*" id="m(\d+)"', body))) == {
            m.id for m in expected
        }
    # An outsider, a missing thread and an absurd id: one and the same 404 page.
    hidden = await get(client, f"/t/{rio}", "nobody@example.net")
    missing = await get(client, "/t/987654", "nobody@example.net")
    huge = await get(client, "/t/999999999999", "nobody@example.net")
    assert hidden[0] == 404 and same_page(hidden, missing) and same_page(hidden, huge)
    assert (await get(client, "/t/abc", "nobody@example.net"))[0] == 404


def config_of(client: Client) -> Config:
    return client.app[CONFIG]()


async def test_quotes_fold_and_signatures_dim(site: tuple[Client, Engine]) -> None:
    client, engine = site
    rio = thread_id(engine, "Re: [PATCH v2 5/7]")
    _, body = await get(client, f"/t/{rio}", "thomas.moll@sysgo.com")
    with Session(engine) as session:
        detail = browse.thread_detail(
            session, viewer_of(config_of(client), "thomas.moll@sysgo.com"), rio
        )
    assert detail is not None
    folded = re.findall(
        r'<details class="quoted">\s*<summary>[^<]+</summary>\s*<div class="text">(.*?)</div>',
        body,
        re.S,
    )
    assert [unescape(f) for f in folded] == [
        m.quoted_text for m in detail.messages if m.quoted_text
    ]
    signed = [m.signature for m in detail.messages if m.signature]
    assert signed
    dimmed = re.findall(r'<div class="signature">(.*?)</div>', body, re.S)
    assert [unescape(s) for s in dimmed] == signed
    # The new text shows outside the fold.
    first = detail.messages[0]
    assert first.new_text.split("\n")[0] in unescape(body.split('<details class="quoted">')[0])


async def test_tree_and_flat_views(site: tuple[Client, Engine]) -> None:
    client, engine = site
    ghost = thread_id(engine, "root message")
    _, tree = await get(client, f"/t/{ghost}", "alice@example.org")
    _, flat = await get(client, f"/t/{ghost}?view=flat", "alice@example.org")
    tree_order = [int(n) for n in re.findall(r'id="m(\d+)"', tree)]
    flat_order = [int(n) for n in re.findall(r'id="m(\d+)"', flat)]
    with Session(engine) as session:
        alice = viewer_of(config_of(client), "alice@example.org")
        rows = [(m.id, m.date) for m in visible_messages(session, alice, ghost)]
    by_date = [pk for pk, _ in sorted(rows, key=lambda r: (r[1], r[0]))]
    assert len(by_date) >= 3
    assert flat_order == by_date
    assert sorted(tree_order) == sorted(by_date) and tree_order != by_date
    depths = re.findall(r'<article class="msg d(\d)"', tree)
    assert len(depths) == len(tree_order) and "0" in depths and max(depths) > "1"
    assert 'class="msg d' not in flat


async def test_permalinks(site: tuple[Client, Engine]) -> None:
    client, engine = site
    heads = thread_id(engine, "Heads up")
    with Session(engine) as session:
        pk, mid = session.execute(
            select(Message.id, Message.message_id).where(Message.thread_id == heads).limit(1)
        ).one()
    for form in (mid, f"<{mid}>", f"%3C{mid.replace('@', '%40')}%3E"):
        response = await client.get(
            f"/m/{form}", headers=sign_in(client.app, "pallen@enron.com"), allow_redirects=False
        )
        assert response.status == 303
        assert response.headers["Location"] == f"/t/{heads}#m{pk}"
    hidden = await get(client, f"/m/{mid}", "nobody@example.net")
    missing = await get(client, "/m/nothing@example.net", "nobody@example.net")
    assert hidden[0] == 404 and same_page(hidden, missing)
    _, page = await get(client, f"/t/{heads}", "pallen@enron.com")
    assert f'id="m{pk}"' in page and f'href="#m{pk}"' in page
    assert f'href="/raw/{pk}"' in page


async def test_merged_thread_ids_redirect(site: tuple[Client, Engine]) -> None:
    client, engine = site
    heads = thread_id(engine, "Heads up")
    with Session(engine) as session, session.begin():
        session.add(ThreadRedirect(old_id=777_777, new_id=heads))
    response = await client.get(
        "/t/777777?view=flat",
        headers=sign_in(client.app, "pallen@enron.com"),
        allow_redirects=False,
    )
    assert response.status == 308
    assert response.headers["Location"] == f"/t/{heads}?view=flat"


async def test_person_page(site: tuple[Client, Engine]) -> None:
    client, engine = site
    rio = thread_id(engine, "Re: [PATCH v2 5/7]")
    status, body = await get(client, "/p/mikey@neuling.org", "thomas.moll@sysgo.com")
    assert status == 200 and thread_links(body) == {rio} and "Michael Neuling" in body
    # Someone the reader shares nothing with is as unknown as a stranger.
    hidden = await get(client, "/p/mikey@neuling.org", "someone.new@enron.com")
    missing = await get(client, "/p/no.one@example.org", "someone.new@enron.com")
    assert hidden[0] == 404 and same_page(hidden, missing)


async def test_french_interface(site: tuple[Client, Engine]) -> None:
    client, engine = site
    heads = thread_id(engine, "Heads up")
    _, english = await get(client, f"/t/{heads}", "pallen@enron.com")
    assert "Show quoted text" in english and 'lang="en"' in english
    _, by_header = await get(
        client, f"/t/{heads}", "pallen@enron.com", **{"Accept-Language": "fr-FR,fr;q=0.9"}
    )
    assert "Afficher le texte cité" in by_header and '<html lang="fr">' in by_header
    headers = sign_in(client.app, "pallen@enron.com")
    headers["Cookie"] += "; lang=fr"
    response = await client.get("/", headers=headers)
    body = await response.text()
    assert "Discussions récentes" in body and "Vos espaces" in body


async def test_dates_in_the_readers_zone(site: tuple[Client, Engine]) -> None:
    client, engine = site
    heads = thread_id(engine, "Heads up")
    with Session(engine) as session:
        last = session.get_one(Thread, heads).last_date
    assert last is not None
    iso = last.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for zone in ("Asia/Tokyo", "America/Los_Angeles"):
        headers = sign_in(client.app, "pallen@enron.com")
        headers["Cookie"] += f"; tz={zone}"
        body = await (await client.get("/", headers=headers)).text()
        shown = re.search(rf'<time datetime="{iso}">([^<]+)</time>', body)
        assert shown is not None
        local = last.astimezone(ZoneInfo(zone))
        hour = local.strftime("%I").lstrip("0")
        assert f"{hour}:{local:%M}" in shown.group(1)
        assert f"{local.month}/{local.day}/" in shown.group(1)


async def test_page_weight(site: tuple[Client, Engine]) -> None:
    """The thread page's own bytes (HTML without message content, CSS, script) stay small."""
    client, engine = site
    heads = thread_id(engine, "Heads up")
    _, body = await get(client, f"/t/{heads}", "pallen@enron.com")
    css = await (await client.get("/static/style.css")).read()
    script = await (await client.get("/static/app.js")).read()
    chrome = re.sub(r'<div class="(body text|text|signature)">.*?</div>', "", body, flags=re.S)
    assert len(chrome.encode()) + len(css) + len(script) < 100_000
