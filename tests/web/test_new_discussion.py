"""Starting a discussion from the viewer, over real Enron mail, on SQLite and PostgreSQL.

In a space: to the space's list address (`[[spaces]] address`), for its
readers only, and the discussion is in the space. To people: colleagues and
people of the writer's own discussions, offered as they type from mail they
may see and never from mail they were not sent.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from html import unescape

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.store.tables import Message
from tests.web.support import CONFIG, ENRON, imported, queued_mail, sign_in, viewer_app

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]

BILL = "bill.rapp@enron.com"  # a member of "ops"
ALLEN = "k..allen@enron.com"  # not a member
CONFIG_TEXT = CONFIG.replace(
    "[bridge]\n", '[bridge]\nmessage_id_domain = "bridge.enron.com"\naddress = "bridge@enron.com"\n'
) + (
    '\n[[spaces]]\nslug = "ops"\nname = "Gas operations"\nmembers = ["bill.rapp@enron.com"]\n'
    'address = "gas-ops@enron.com"\n'
)


@pytest.fixture
async def site(engine: Engine, aiohttp_client: ClientMaker) -> tuple[Client, Engine]:
    config = imported(engine, [ENRON], CONFIG_TEXT)
    return await aiohttp_client(viewer_app(engine, config)), engine


async def post_new(
    client: Client, who: str, query: str = "", **fields: str
) -> tuple[int, str, str]:
    headers = sign_in(client.app, who)
    page = await client.get(f"/new{query}", headers=headers)
    found = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    form = FormData()
    form.add_field("csrf_token", found.group(1) if found else "x")
    for name, value in fields.items():
        form.add_field(name, value)
    answer = await client.post("/new", data=form, headers=headers, allow_redirects=False)
    return answer.status, answer.headers.get("Location", ""), await answer.text()


async def test_a_new_discussion_in_a_space_goes_to_its_list_and_stays_in_it(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    page = await client.get("/s/ops", headers=sign_in(client.app, BILL))
    assert 'href="/new?space=ops"' in await page.text()
    form = await client.get("/new?space=ops", headers=sign_in(client.app, BILL))
    assert "gas-ops@enron.com" in await form.text()
    status, location, _ = await post_new(
        client, BILL, "?space=ops", space="ops", subject="Pipeline outage", body="Friday 6am."
    )
    assert status == 303 and location.startswith("/t/")
    [(recipients, mail)] = queued_mail(engine)
    assert recipients == ["gas-ops@enron.com"]
    assert mail["Subject"] == "Pipeline outage" and mail["In-Reply-To"] is None
    with Session(engine) as session:
        space = session.execute(
            select(Message.space).where(Message.message_id == mail["Message-ID"].strip("<>"))
        ).scalar_one()
    assert space == "ops"
    listing = await client.get("/s/ops", headers=sign_in(client.app, BILL))
    assert "Pipeline outage" in await listing.text()


async def test_only_a_spaces_readers_start_discussions_in_it(site: tuple[Client, Engine]) -> None:
    client, engine = site
    headers = sign_in(client.app, ALLEN)
    hidden = await client.get("/new?space=ops", headers=headers)
    missing = await client.get("/new?space=nosuch", headers=headers)
    assert hidden.status == missing.status == 404
    status, _, _ = await post_new(client, ALLEN, "", space="ops", subject="x", body="y")
    assert status == 404
    assert queued_mail(engine) == []


async def test_writing_to_people_takes_colleagues_and_correspondents_only(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    status, _, page = await post_new(
        client, BILL, to="stranger@outside.example", subject="Hello", body="Hi"
    )
    assert status == 400 and "stranger@outside.example" in page
    assert queued_mail(engine) == []
    status, _, _ = await post_new(
        client,
        BILL,
        to="terry.kowalke@enron.com, new.hire@enron.com",
        subject="Filing",
        body="Shall we file together?",
    )
    assert status == 303
    [(recipients, mail)] = queued_mail(engine)
    assert recipients == ["terry.kowalke@enron.com", "new.hire@enron.com"]
    assert mail["Reply-To"].addresses[0].addr_spec == BILL


async def test_offered_addresses_come_from_mail_the_writer_may_see(
    site: tuple[Client, Engine],
) -> None:
    client, _engine = site
    bill = unescape(await (await client.get("/new", headers=sign_in(client.app, BILL))).text())
    allen = unescape(await (await client.get("/new", headers=sign_in(client.app, ALLEN))).text())
    offered = re.compile(r'<option value="([^"]+)">')
    assert "terry.kowalke@enron.com" in offered.findall(bill)
    # Heather wrote only to Phillip Allen: Bill is never offered her address.
    assert "heather.dunton@enron.com" in offered.findall(allen)
    assert "heather.dunton@enron.com" not in bill
