"""The admin page of id collisions: a forged copy of a real Enron message came in."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.store.test_collisions import (
    FORGED,
    GENUINE,
    REAL_ID,
    forged_copy,
    genuine_copy,
    message_of,
    store,
)
from tests.web import auth_helpers
from tests.web.auth_helpers import ADMIN, STAFF, MakeSite

make_site = auth_helpers.make_site  # the fixture


async def test_admins_see_the_collisions_others_a_404(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(ADMIN)
    empty = await (await site.client.get("/admin/collisions")).text()
    assert "No message shares its Message-ID with other content." in empty

    store(sqlite_engine, [genuine_copy()], [forged_copy()])
    with Session(sqlite_engine) as session:
        genuine, fake = message_of(session, GENUINE), message_of(session, FORGED)
    page = await (await site.client.get("/admin/collisions")).text()
    assert f"<td>{fake.id}</td>" in page
    assert f"<code>{fake.message_id}</code>" in page and f"<code>{REAL_ID}</code>" in page
    assert f"#{genuine.id}" in page
    assert "kam.keiser@enron.com" in page and "RE: Heads up" in page
    assert "file test/forged forged forged" in page
    overview = await (await site.client.get("/admin")).text()
    assert 'href="/admin/collisions">ID collisions</a></th><td>1</td>' in overview

    await site.sign_in(STAFF)
    assert (await site.client.get("/admin/collisions")).status == 404
