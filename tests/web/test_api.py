"""The JSON API on real imported mail: shapes, filters, paging, auth, bad parameters.

Enron's maildir, the lkml threads and cpython's "IMAP file test" (a mail
with a BMP attachment) are imported through the real pipeline under the
rules of tests/web/support.py, plus one rule putting the attachment mail in
"gas". Expected contents come from the files themselves (stdlib email).
"""

from __future__ import annotations

import email
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message as EmailMessage
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
from tests.web.support import CONFIG, ENRON, LKML, MIME, imported, sign_in, viewer_app

CLOCK_FILE = MIME / "cpython-test_email-data" / "msg_26.txt"
CLOCK_RULE = """
[[rules]]
name = "clock"
space = "gas"
[rules.match]
subject = "IMAP file test"
"""
RIO_FILE = LKML / "1382298770.004581.eml"
ClientMaker = Any  # pytest-aiohttp's aiohttp_client


def clock_dir(root: Path) -> Path:
    folder = root / "clock"
    folder.mkdir()
    shutil.copy(CLOCK_FILE, folder / "clock.eml")
    return folder


def store_with_mail(engine: Engine, root: Path) -> Config:
    return imported(engine, [ENRON, LKML, clock_dir(root)], CONFIG + CLOCK_RULE)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Config]]:
    root = tmp_path_factory.mktemp("api")
    engine = make_engine(str(root / "bridge.db"))
    upgrade(engine)
    config = store_with_mail(engine, root)
    yield engine, config
    engine.dispose()


@pytest.fixture
async def client(store: tuple[Engine, Config], aiohttp_client: ClientMaker) -> TestClient:
    engine, config = store
    return await aiohttp_client(viewer_app(engine, config))


async def get(client: TestClient, path: str, who: str | None, **params: str) -> Any:
    headers = sign_in(client.app, who) if who else {}
    response = await client.get(path, headers=headers, params=params)
    return response.status, await response.json()


def parsed(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes())


def plain_body(message: EmailMessage) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(part.get_content_charset() or "utf-8", "replace")


async def test_a_reader_lists_exactly_the_threads_they_may_see(client: TestClient) -> None:
    status, body = await get(client, "/api/v1/threads", "k..allen@enron.com")
    assert status == 200
    subjects = {t["subject"] for t in body["threads"]}
    # To on the (private) West Position mail; staff, so the staff-open "trading" space.
    assert subjects == {"RE: West Position", "Heads up"}
    assert body["total"] == 2 and body["next"] is None
    dates = [t["last_date"] for t in body["threads"]]
    assert dates == sorted(dates, reverse=True)
    for thread in body["threads"]:
        assert thread["last_date"].endswith("Z")
        datetime.fromisoformat(thread["last_date"].replace("Z", "+00:00"))
    heads = next(t for t in body["threads"] if t["subject"] == "Heads up")
    # Five distinct messages among the copies in four Enron mailboxes.
    assert heads["space"] == "trading" and heads["message_count"] == 5
    assert "d..winfree@enron.com" in {p["address"] for p in heads["participants"]}


async def test_filters_by_space_participant_attachment_and_dates(client: TestClient) -> None:
    who = "outside.analyst@example.org"  # a member of "gas": SoCal and the attachment mail
    _, everything = await get(client, "/api/v1/threads", who)
    assert {t["subject"] for t in everything["threads"]} == {
        "SoCal Gas CPUC Proceeding",
        "IMAP file test",
    }
    _, files = await get(client, "/api/v1/threads", who, has_attachment="true")
    assert [t["subject"] for t in files["threads"]] == ["IMAP file test"]
    assert files["threads"][0]["has_attachment"] is True
    _, without = await get(client, "/api/v1/threads", who, has_attachment="false")
    assert [t["subject"] for t in without["threads"]] == ["SoCal Gas CPUC Proceeding"]
    _, by_person = await get(client, "/api/v1/threads", who, participant="Lindy.Donoho@enron.com")
    assert [t["subject"] for t in by_person["threads"]] == ["SoCal Gas CPUC Proceeding"]
    _, in_space = await get(client, "/api/v1/threads", who, space="gas")
    assert in_space["total"] == 2
    _, elsewhere = await get(client, "/api/v1/threads", who, space="trading")
    assert elsewhere["threads"] == [] and elsewhere["total"] == 0
    # SoCal ran on 2001-11-20; the attachment mail is from May 2002.
    _, late = await get(client, "/api/v1/threads", who, after="2002-01-01")
    assert [t["subject"] for t in late["threads"]] == ["IMAP file test"]
    _, early = await get(client, "/api/v1/threads", who, before="2001-11-21T00:00:00+01:00")
    assert [t["subject"] for t in early["threads"]] == ["SoCal Gas CPUC Proceeding"]


async def test_pages_follow_next_links_to_the_end(client: TestClient) -> None:
    who = "thomas.moll@sysgo.com"  # the RapidIO thread only
    _, whole = await get(client, "/api/v1/threads", "jlayton@samba.org")
    assert whole["total"] >= 1
    seen: list[int] = []
    url: str | None = "/api/v1/threads?limit=1"
    headers = sign_in(client.app, "jlayton@samba.org")
    while url:
        response = await client.get(url, headers=headers)
        page = await response.json()
        seen += [t["id"] for t in page["threads"]]
        url = page["next"]
    assert seen == [t["id"] for t in whole["threads"]]
    _, one = await get(client, "/api/v1/threads", who, limit="1", offset="5")
    assert one["threads"] == [] and one["next"] is None


async def test_a_thread_carries_new_text_quotes_and_attachment_metadata(
    client: TestClient,
) -> None:
    who = "timbo@jeeves.wooster.local"
    _, listing = await get(client, "/api/v1/threads", who)
    (thread,) = listing["threads"]
    status, body = await get(client, f"/api/v1/threads/{thread['id']}", who)
    assert status == 200
    (message,) = body["messages"]
    source = parsed(CLOCK_FILE)
    assert message["message_id"] == source["Message-ID"].strip("<>")
    assert message["sender"]["address"] == "father.time@xcar.wooster.local"
    assert message["to"] == [{"address": "timbo@jeeves.wooster.local", "name": ""}]
    assert message["new_text"].strip() == plain_body(source).strip()
    (attachment,) = message["attachments"]
    assert attachment["filename"] == "clock.bmp"
    assert attachment["url"] == f"/a/{message['id']}/{attachment['position']}"
    assert attachment["size"] > 0
    assert message["links"]["raw"] == f"/raw/{message['id']}"
    assert message["date"] == "2002-05-12T07:56:15Z"  # +0100 in the header
    # The attachment answers at the advertised URL, as a download.
    response = await client.get(attachment["url"], headers=sign_in(client.app, who))
    assert response.status == 200
    assert len(await response.read()) == attachment["size"]


async def test_quoted_history_is_split_from_the_new_text(client: TestClient) -> None:
    who = "kam.keiser@enron.com"
    _, listing = await get(client, "/api/v1/threads", who, space="trading")
    (heads,) = listing["threads"]
    _, body = await get(client, f"/api/v1/threads/{heads['id']}", who)
    replies = [m for m in body["messages"] if m["subject"].startswith("RE:")]
    assert replies and all(m["quoted_text"] for m in replies)
    for m in replies:
        assert "Original Message" not in m["new_text"]
    # Tree order: every parent comes before its replies.
    position = {m["id"]: i for i, m in enumerate(body["messages"])}
    for m in body["messages"]:
        if m["parent_id"] is not None:
            assert position[m["parent_id"]] < position[m["id"]]


async def test_references_to_hidden_messages_name_no_parent_and_answer_404(
    client: TestClient,
) -> None:
    """r58472 sees three RapidIO mails; the private ones they reply to stay hidden."""
    who = "r58472@freescale.com"
    _, listing = await get(client, "/api/v1/threads", who)
    (rio,) = listing["threads"]
    assert rio["message_count"] == 3
    _, body = await get(client, f"/api/v1/threads/{rio['id']}", who)
    shown = {m["message_id"] for m in body["messages"]}
    assert len(shown) == 3
    for m in body["messages"]:
        assert m["parent_message_id"] is None or m["parent_message_id"] in shown
    named = {
        ref.strip("<>")
        for path in sorted(LKML.glob("*.eml"))
        if parsed(path)["Message-ID"].strip("<>") in shown
        for ref in (parsed(path)["References"] or "").split()
    }
    hidden = named - shown
    assert "4381.1280815590@neuling.org" in hidden  # Neuling's private reply
    _, missing = await get(client, "/api/v1/messages/no-such-message@example.org", who)
    for message_id in hidden:
        status, answer = await get(client, f"/api/v1/messages/{message_id}", who)
        assert (status, answer) == (404, missing)
    status, one = await get(client, f"/api/v1/messages/<{sorted(shown)[0]}>", who)
    assert status == 200 and one["thread_id"] == rio["id"]


async def test_hidden_and_missing_threads_answer_the_same_404(client: TestClient) -> None:
    _, listing = await get(client, "/api/v1/threads", "k..allen@enron.com")
    west = next(t for t in listing["threads"] if t["subject"] == "RE: West Position")
    who = "outside.analyst@example.org"  # a gas member: West is in gas, but private
    hidden = await get(client, f"/api/v1/threads/{west['id']}", who)
    missing = await get(client, "/api/v1/threads/987654321", who)
    huge = await get(client, f"/api/v1/threads/{2**70}", who)
    assert hidden == missing == huge
    assert hidden[0] == 404 and hidden[1]["error"] == "not_found"


async def test_search_uses_the_query_language_and_the_access_rule(client: TestClient) -> None:
    status, body = await get(client, "/api/v1/search", "k..allen@enron.com", q="west position")
    assert status == 200
    assert [r["subject"] for r in body["results"]] == ["RE: West Position"]
    assert "<mark>" in body["results"][0]["snippet"]
    assert body["total_threads"] == 1 and body["page"] == 1
    _, other = await get(client, "/api/v1/search", "outside.analyst@example.org", q="west")
    assert other["results"] == [] and other["total_threads"] == 0
    _, operators = await get(
        client, "/api/v1/search", "outside.analyst@example.org", q="from:bill.rapp in:gas"
    )
    assert [r["subject"] for r in operators["results"]] == ["SoCal Gas CPUC Proceeding"]
    assert operators["results"][0]["matches"] >= 1
    # OR, groups, prefixes, and exclusions after operators alone.
    for q, found in (
        ("(cpuc OR zzzq) in:gas", ["SoCal Gas CPUC Proceeding"]),
        ("from:bill.rapp in:gas -cpuc", []),
        ("from:bill.rapp in:gas -zzzq", ["SoCal Gas CPUC Proceeding"]),
        ("procee* in:gas", ["SoCal Gas CPUC Proceeding"]),
    ):
        _, new = await get(client, "/api/v1/search", "outside.analyst@example.org", q=q)
        assert [r["subject"] for r in new["results"]] == found and new["hints"] == [], q
    _, short = await get(client, "/api/v1/search", "outside.analyst@example.org", q="pr* in:gas")
    assert short["hints"] and "prefix" in short["hints"][0]
    # Malformed syntax: results for the words, with a hint, never an error.
    status, odd = await get(client, "/api/v1/search", "kam.keiser@enron.com", q='"heads up')
    assert status == 200 and [r["subject"] for r in odd["results"]] == ["Heads up"]
    _, past = await get(client, "/api/v1/search", "kam.keiser@enron.com", q="heads", page="2")
    assert past["results"] == [] and past["page"] == 2


async def test_spaces_are_those_the_reader_may_read(client: TestClient) -> None:
    _, analyst = await get(client, "/api/v1/spaces", "outside.analyst@example.org")
    assert [s["slug"] for s in analyst["spaces"]] == ["gas"]
    assert analyst["spaces"][0]["name"] == "Gas desk"
    _, staff = await get(client, "/api/v1/spaces", "someone.new@enron.com")
    assert [s["slug"] for s in staff["spaces"]] == ["trading"]
    _, outsider = await get(client, "/api/v1/spaces", "nobody@example.net")
    assert outsider["spaces"] == []


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/threads", {"limit": "abc"}),
        ("/api/v1/threads", {"limit": "101"}),
        ("/api/v1/threads", {"limit": "0"}),
        ("/api/v1/threads", {"offset": "-1"}),
        ("/api/v1/threads", {"offset": str(2**64)}),
        ("/api/v1/threads", {"has_attachment": "maybe"}),
        ("/api/v1/threads", {"after": "2001-13-01"}),
        ("/api/v1/threads", {"before": "yesterday"}),
        ("/api/v1/search", {}),
        ("/api/v1/search", {"q": "x", "page": "0"}),
        ("/api/v1/search", {"q": "x" * 501}),
    ],
)
async def test_bad_parameters_answer_400_json(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    status, body = await get(client, path, "k..allen@enron.com", **params)
    assert status == 400
    assert body["error"] == "bad_request" and body["message"]


async def test_signed_out_is_401_and_a_feed_token_is_a_bearer(client: TestClient) -> None:
    status, body = await get(client, "/api/v1/threads", None)
    assert status == 401 and body["error"] == "unauthorized"
    who = "kam.keiser@enron.com"
    token = feed_token(client.app[SIGNER], who, 0)
    bearer = {"Authorization": f"Bearer {token}"}
    response = await client.get("/api/v1/spaces", headers=bearer)
    assert response.status == 200
    assert [s["slug"] for s in (await response.json())["spaces"]] == ["trading"]
    for wrong in ("Bearer nonsense", f"Bearer {token}x", "Basic a2FtOmtleQ=="):
        response = await client.get("/api/v1/spaces", headers={"Authorization": wrong})
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    # A new feed epoch revokes the token for the API as for the feeds.
    with Session(client.app[STORE].engine) as session, session.begin():
        bump_feed_epoch(session, who, datetime.now(UTC))
    response = await client.get("/api/v1/spaces", headers=bearer)
    assert response.status == 401


async def test_the_document_is_served_and_names_every_route(client: TestClient) -> None:
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    routes = {r.resource.canonical for r in client.app.router.routes() if r.resource}
    api_routes = {r for r in routes if r.startswith("/api/v1/") and r != "/api/v1/openapi.json"}
    documented = {p.replace("{message_id}", "{message_id:.+}") for p in document["paths"]}
    assert api_routes <= documented | {"/api/v1/messages/{message_id}"}
    assert len(document["paths"]) == 9
    methods = {(r.resource.canonical, r.method) for r in client.app.router.routes() if r.resource}
    for path, operations in document["paths"].items():
        for method in operations:
            assert (path, method.upper()) in methods, f"{method} {path} is not served"
    schemes = document["components"]["securitySchemes"]
    assert schemes["session"]["in"] == "cookie" and schemes["bearer"]["scheme"] == "bearer"


async def test_the_api_answers_alike_on_each_backend(
    engine: Engine, tmp_path: Path, aiohttp_client: ClientMaker
) -> None:
    config = store_with_mail(engine, tmp_path)
    client = await aiohttp_client(viewer_app(engine, config))
    _, listing = await get(client, "/api/v1/threads", "k..allen@enron.com")
    assert {t["subject"] for t in listing["threads"]} == {"RE: West Position", "Heads up"}
    _, found = await get(client, "/api/v1/search", "k..allen@enron.com", q="heads")
    assert [r["subject"] for r in found["results"]] == ["Heads up"]
    status, _ = await get(client, "/api/v1/threads", "k..allen@enron.com", after="0001-01-01")
    assert status == 200
    status, _ = await get(client, "/api/v1/messages/a\x00b@example.org", "k..allen@enron.com")
    assert status == 404
