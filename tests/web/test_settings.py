"""A person's settings, feed links and the language switch, through the app on a real store."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

from aiohttp import ClientResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.store.tables import User
from bridge.web.account.auth_store import feed_viewer_address
from bridge.web.frame.keys import SIGNER
from tests.web import auth_helpers
from tests.web.auth_helpers import PARTNER, STAFF, MakeSite, Site

make_site = auth_helpers.make_site  # the fixture


async def post(
    site: Site, path: str, form: dict[str, str], page: str = "/settings"
) -> ClientResponse:
    token = await site.token(page)
    return await site.client.post(path, data={**form, "csrf_token": token}, allow_redirects=False)


async def test_settings_need_a_reader(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    response = await site.client.get("/settings", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=/settings"


async def test_saving_settings(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(STAFF)
    form = {"language": "fr", "timezone": "Europe/Paris", "digest_frequency": "daily"}
    response = await post(site, "/settings", form)
    assert response.status == 303
    assert response.headers["Location"] == "/settings?saved=1"
    with Session(sqlite_engine) as s:
        row = s.get(User, STAFF)
        assert row is not None
        assert (row.language, row.timezone, row.digest_frequency) == ("fr", "Europe/Paris", "daily")
    # The page now speaks French and shows the choices made.
    page = await (await site.client.get("/settings?saved=1")).text()
    assert '<html lang="fr">' in page
    assert "Vos réglages sont enregistrés." in page
    assert "<option selected>Europe/Paris</option>" in page
    assert '<option value="daily" selected>' in page
    # Back to the defaults.
    await post(site, "/settings", {"language": "", "timezone": "", "digest_frequency": ""})
    with Session(sqlite_engine) as s:
        row = s.get(User, STAFF)
        assert row is not None and (row.language, row.timezone, row.digest_frequency) == (
            "",
            "",
            "",
        )


async def test_bad_settings_are_refused(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(STAFF)
    for form in (
        {"language": "de", "timezone": "", "digest_frequency": ""},
        {"language": "", "timezone": "Mars/Olympus", "digest_frequency": ""},
        {"language": "", "timezone": "", "digest_frequency": "hourly"},
    ):
        response = await post(site, "/settings", form)
        assert response.status == 400
        assert "Choose" in await response.text()
    with Session(sqlite_engine) as s:
        assert s.get(User, STAFF) is None


async def test_feed_links_and_new_feed_links(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(PARTNER)  # a member of the "ops" space
    page = await (await site.client.get("/settings")).text()
    links = re.findall(r'href="(http://bridge\.test/feeds/s/ops\.atom\?token=[^"]+)"', page)
    assert len(links) == 1
    token = links[0].rpartition("=")[2]
    assert feed_viewer_address(site.app[SIGNER], token) == (PARTNER, 0)
    response = await post(site, "/settings/feeds", {})
    assert response.headers["Location"] == "/settings?saved=feeds"
    page = await (await site.client.get("/settings?saved=feeds")).text()
    assert "the old ones no longer work" in page
    new = re.findall(r'href="http://bridge\.test/feeds/s/ops\.atom\?token=([^"]+)"', page)
    assert new != [token]
    assert feed_viewer_address(site.app[SIGNER], new[0]) == (PARTNER, 1)
    with Session(sqlite_engine) as s:
        row = s.get(User, PARTNER)
        assert row is not None and row.feed_epoch == 1


async def test_the_language_switch(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    response = await post(site, "/language", {"lang": "fr", "next": "/login?next=/t/1"}, "/login")
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=/t/1"
    cookie = SimpleCookie(response.headers["Set-Cookie"])["lang"]
    assert cookie.value == "fr" and cookie["path"] == "/" and cookie["samesite"] == "Lax"
    page = await (await site.client.get("/login")).text()
    assert "Se connecter" in page and '<html lang="fr">' in page
    # It also works signed in, and outranks the browser's language.
    await site.sign_in(STAFF)
    await post(site, "/language", {"lang": "en", "next": "/settings"})
    english = await site.client.get("/settings", headers={"Accept-Language": "fr"})
    assert '<html lang="en">' in await english.text()


async def test_the_language_switch_stays_on_this_site(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example", ""):
        response = await post(site, "/language", {"lang": "fr", "next": target}, "/login")
        assert response.headers["Location"] == "/"
    bad = await post(site, "/language", {"lang": "xx", "next": "/"}, "/login")
    assert bad.status == 400
