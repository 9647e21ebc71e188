"""The search page: the CLI's query language, cut to what the reader may see, never a 500."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.core.search_language.query import parse_query
from bridge.i18n import catalog
from bridge.search import search
from bridge.store.tables import Message, Thread
from bridge.store.visibility.access import visible_messages, visible_thread_ids
from tests.web.support import ENRON, LKML, imported, sign_in, viewer_app, viewer_of

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]
READERS = ["thomas.moll@sysgo.com", "mikey@neuling.org", "pallen@enron.com", "nobody@example.net"]
QUERIES = [
    "the",
    "rapidio",
    "from:neuling",
    "heads",
    "has:attachment",
    "is:reply",
    "position",
    "from:neuling -rapidio",
    "rapid* OR heads",
    "(position OR gas) -the",
]


@pytest.fixture
def store(engine: Engine) -> tuple[Engine, Config]:
    return engine, imported(engine, [ENRON, LKML])


@pytest.mark.parametrize("address", READERS)
def test_engine_results_and_counts_cover_only_what_the_reader_sees(
    store: tuple[Engine, Config], address: str
) -> None:
    engine, config = store
    viewer = viewer_of(config, address)
    with Session(engine) as session:
        threads = visible_thread_ids(session, viewer)
        seen = {m.id for t in threads for m in visible_messages(session, viewer, t)}
        for text in QUERIES:
            everyone = search(session, text, limit=1000)
            mine = search(session, text, limit=1000, viewer=viewer)
            assert {h.thread_id for h in mine.hits} <= threads
            assert mine.total_threads == len(mine.hits)
            # What the reader finds is what everyone finds, less what they may not see.
            for hit in everyone.hits:
                pk = session.execute(
                    select(Message.id).where(Message.message_id == hit.message_id)
                ).scalar_one()
                if pk in seen:
                    assert hit.thread_id in {h.thread_id for h in mine.hits}
            for hit in mine.hits:
                pk = session.execute(
                    select(Message.id).where(Message.message_id == hit.message_id)
                ).scalar_one()
                assert pk in seen
                shown = visible_messages(session, viewer, hit.thread_id)
                assert hit.thread_messages == len(shown)
                assert 1 <= hit.matches <= len(shown)


def test_the_command_line_still_sees_everything(store: tuple[Engine, Config]) -> None:
    engine, _ = store
    with Session(engine) as session:
        every = len(session.execute(select(Thread.id)).all())
        assert search(session, "the", limit=1000).total_threads == every


@pytest.fixture
async def client(sqlite_engine: Engine, aiohttp_client: ClientMaker) -> Client:
    return await aiohttp_client(viewer_app(sqlite_engine, imported(sqlite_engine, [ENRON, LKML])))


async def test_search_page_results_and_counts_by_reader(client: Client) -> None:
    found = {}
    for who in ("thomas.moll@sysgo.com", "pallen@enron.com", "nobody@example.net"):
        response = await client.get("/search?q=the", headers=sign_in(client.app, who))
        assert response.status == 200
        body = await response.text()
        total = re.search(r'<p class="total">(\d+|1) discussion', body)
        hits = re.findall(r'<li class="result"[ >]', body)
        found[who] = (int(total.group(1)) if total else -1, len(hits))
    assert found["thomas.moll@sysgo.com"] == (1, 1)
    assert found["pallen@enron.com"] == (2, 2)
    assert found["nobody@example.net"] == (0, 0)


async def test_snippets_are_escaped_and_marked(client: Client) -> None:
    body = await (
        await client.get("/search?q=rapidio", headers=sign_in(client.app, "thomas.moll@sysgo.com"))
    ).text()
    snippets = re.findall(r'<p class="snippet">(.*?)</p>', body, re.S)
    assert snippets and all("<mark>" in s for s in snippets)
    for s in snippets:
        assert re.sub(r"</?mark>", "", s).count("<") == 0  # everything else escaped


@pytest.mark.parametrize(
    "text",
    [
        '"unbalanced quote',
        "from:",
        "subject:",
        "-",
        "AND OR NOT",
        "before:2001-13-45",
        "has:wings",
        "a:b:c",
        '"',
        "*",
        "NEAR(",
        "x" * 5000,
        "<script>alert(1)</script>",
        "\x00\x01",
    ],
)
async def test_malformed_queries_answer_with_a_hint_never_a_500(client: Client, text: str) -> None:
    response = await client.get(
        "/search", params={"q": text}, headers=sign_in(client.app, "pallen@enron.com")
    )
    assert response.status == 200, text
    body = await response.text()
    assert "<script>alert" not in body


async def test_hints_and_help(client: Client) -> None:
    headers = sign_in(client.app, "pallen@enron.com")
    body = await (await client.get("/search", params={"q": '"heads up'}, headers=headers)).text()
    assert 'class="notice hint"' in body and "unclosed quote" in body
    assert re.search(r'<p class="total">1 discussion', body)
    for operator in (
        "from:",
        "to:",
        "cc:",
        "subject:",
        "in:",
        "has:attachment",
        "filename:",
        "before:",
        "after:",
        "is:reply",
    ):
        assert operator in body
    bad = await client.get("/search", params={"q": "x", "page": "0"}, headers=headers)
    assert bad.status == 400


async def test_or_prefixes_and_exclusions_on_the_page_and_in_the_help(client: Client) -> None:
    headers = sign_in(client.app, "thomas.moll@sysgo.com")
    either = await (
        await client.get("/search", params={"q": "rapid* OR zzzq"}, headers=headers)
    ).text()
    assert re.search(r'<p class="total">1 discussion', either)
    assert "<mark>RapidIO</mark>" in either or "<mark>rapidio</mark>" in either.lower()
    excluded = await (
        await client.get("/search", params={"q": "from:neuling -rapidio"}, headers=headers)
    ).text()
    assert 'class="notice hint"' not in excluded
    for example in ("budget OR forecast", "(gas OR power) review", "contra*", "-(draft OR old)"):
        assert f"<code>{example}</code>" in html.unescape(either)
    french = headers | {"Accept-Language": "fr"}
    body = await (await client.get("/search", params={"q": "co* (rapidio"}, headers=french)).text()
    text = html.unescape(body)
    assert "« co* » : un préfixe demande au moins 3 lettres avant « * »" in text
    assert "parenthèse « ( » non fermée" in text
    assert "l’un ou l’autre mot (OR en majuscules)" in text


def test_every_search_hint_has_a_french_translation() -> None:
    queries = [
        '"x', 'subject:"x', "from: x", "subject:!! x", "has:wings x", "before:2001-13-45 x",
        "-from:a x", "after:2002 before:2001", "form:x", "-x", "OR x", "x OR from:a",
        "x OR -y", "(x", "x)", "((x))", "co*", "y" * 1200,
    ]  # fmt: skip
    french = catalog("fr")
    seen = {hint.template for text in queries for hint in parse_query(text).hints}
    assert len(seen) == 18
    assert seen <= french.keys(), seen - french.keys()


async def test_hints_come_in_the_readers_language(
    sqlite_engine: Engine, aiohttp_client: Any
) -> None:
    config = imported(sqlite_engine, [ENRON])
    client = await aiohttp_client(viewer_app(sqlite_engine, config))
    headers = sign_in(client.app, "pallen@enron.com") | {"Accept-Language": "fr"}
    response = await client.get("/search?q=has:wings%20gas", headers=headers)
    body = await response.text()
    assert response.status == 200
    assert "« has:wings » inconnu : ignoré (essayez has:attachment)" in body
    english = await client.get(
        "/search?q=has:wings%20gas", headers=sign_in(client.app, "pallen@enron.com")
    )
    assert 'unknown "has:wings", ignored (try has:attachment)' in html.unescape(
        await english.text()
    )
