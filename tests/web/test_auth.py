"""Sign-in by link, sessions, single sign-on and CSRF, on a real store and a real app."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from html import unescape
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.config import BridgeConfig, OutboundConfig
from bridge.outbound.scheduler import maintain
from bridge.signing import Signer
from bridge.store.tables import LoginToken, Person, WebSession
from bridge.web.account import auth_store
from bridge.web.account.auth_store import (
    consume_login_token,
    create_login_token,
    create_session,
    delete_session,
    load_session,
    login_token_valid,
    recent_requests,
    secret_hash,
)
from bridge.web.frame.keys import SIGNER
from tests.web import auth_helpers
from tests.web.auth_helpers import (
    ADMIN,
    PARTNER,
    STAFF,
    START,
    STRANGER,
    MakeSite,
    Site,
    form_token,
    link_in,
)

make_site = auth_helpers.make_site  # the fixture

# --- store functions, on SQLite and PostgreSQL ----------------------------------


def test_sessions_are_stored_hashed_and_expire(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        raw = create_session(s, "Alice@Example.com", "link", START, days=2)
    with Session(engine) as s:
        row = s.execute(select(WebSession)).scalar_one()
        assert row.id_hash == secret_hash(raw) and raw not in row.id_hash
        assert row.address == "alice@example.com"
        found = load_session(s, raw, START + timedelta(days=1))
        assert found is not None and found.address == "alice@example.com"
        assert found.prefs.language == "" and found.via == "link"
        assert load_session(s, raw, START + timedelta(days=2)) is None
        assert load_session(s, raw + "x", START) is None
    with Session(engine) as s, s.begin():
        auth_store.update_user(
            s, "alice@example.com", START, language="fr", timezone="Europe/Paris"
        )
    with Session(engine) as s:
        found = load_session(s, raw, START)
        assert found is not None and found.prefs.language == "fr"
        assert found.prefs.timezone == "Europe/Paris"
    with Session(engine) as s, s.begin():
        assert delete_session(s, raw)
    with Session(engine) as s:
        assert load_session(s, raw, START) is None


def test_login_tokens_are_single_use_and_expire(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        first = create_login_token(s, STAFF, "192.0.2.1", START)
        second = create_login_token(s, STAFF, "192.0.2.1", START)
        unsent = create_login_token(s, STRANGER, "192.0.2.1", START, usable=False)
    with Session(engine) as s:
        hashes = set(s.execute(select(LoginToken.token_hash)).scalars())
        assert hashes == {secret_hash(first), secret_hash(second), secret_hash(unsent)}
        # Looking does not use it up.
        assert login_token_valid(s, first, START) and login_token_valid(s, first, START)
        assert not login_token_valid(s, unsent, START)
    with Session(engine) as s, s.begin():
        assert consume_login_token(s, first, START + timedelta(minutes=1)) == STAFF
    with Session(engine) as s, s.begin():
        assert consume_login_token(s, first, START + timedelta(minutes=2)) is None
        assert consume_login_token(s, unsent, START) is None
        assert consume_login_token(s, "made-up", START) is None
        # Valid 15 minutes: at 15 minutes it is gone.
        assert consume_login_token(s, second, START + timedelta(minutes=15)) is None
    with Session(engine) as s, s.begin():
        assert consume_login_token(s, second, START + timedelta(minutes=14)) == STAFF


def test_a_token_is_used_once_under_concurrent_posts(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        token = create_login_token(s, STAFF, "192.0.2.1", START)
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        with Session(engine) as s, s.begin():
            found = consume_login_token(s, token, START)
        if found is not None:
            winners.append(found)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert winners == [STAFF]


def test_recent_requests_count_by_address_and_client(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        create_login_token(s, STAFF, "192.0.2.1", START - timedelta(minutes=61))
        create_login_token(s, STAFF, "192.0.2.1", START - timedelta(minutes=30))
        create_login_token(s, STRANGER, "192.0.2.1", START, usable=False)
        create_login_token(s, STAFF, "198.51.100.7", START)
    with Session(engine) as s:
        assert recent_requests(s, START, STAFF, "192.0.2.1") == (2, 2)
        assert recent_requests(s, START, STRANGER, "198.51.100.7") == (1, 1)
        assert recent_requests(s, START, "x@example.com", "203.0.113.9") == (0, 0)


def test_purge_forgets_old_rows(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        create_login_token(s, STAFF, "c", START - timedelta(days=2))
        create_login_token(s, STAFF, "c", START)
        create_session(s, STAFF, "link", START - timedelta(days=40), days=30)
        keep = create_session(s, STAFF, "link", START, days=30)
        auth_store.purge_expired(s, START)
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(LoginToken)).scalar_one() == 1
        assert s.execute(select(WebSession.id_hash)).scalars().all() == [secret_hash(keep)]


def test_feed_tokens_round_trip_and_refuse_other_purposes() -> None:
    signer = Signer(b"k" * 32)
    token = auth_store.feed_token(signer, "Alice@Example.com", 3)
    assert auth_store.feed_viewer_address(signer, token) == ("alice@example.com", 3)
    assert auth_store.feed_viewer_address(signer, token + "x") is None
    assert auth_store.feed_viewer_address(signer, signer.sign("session", "abc")) is None
    assert auth_store.feed_viewer_address(Signer(b"j" * 32), token) is None
    assert auth_store.feed_viewer_address(signer, signer.sign("feed", ["a@b.c", True])) is None


# --- asking for a link ------------------------------------------------------------


async def ask(site: Site, address: str, **headers: str) -> tuple[int, str]:
    token = await site.token()
    response = await site.client.post(
        "/login", data={"address": address, "csrf_token": token, "next": ""}, headers=headers
    )
    return response.status, await response.text()


async def test_known_and_unknown_addresses_get_the_same_answer(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    status_known, body_known = await ask(site, STAFF)
    status_unknown, body_unknown = await ask(site, STRANGER)
    assert status_known == status_unknown == 200
    assert body_known.replace(STAFF, "@") == body_unknown.replace(STRANGER, "@")
    assert "Check your mail" in body_known
    mail = site.mail()
    assert [m["To"] for m in mail] == [STAFF]
    with Session(sqlite_engine) as s:
        asked = s.execute(select(LoginToken.address).order_by(LoginToken.address)).scalars()
        assert list(asked) == sorted([STAFF, STRANGER])


@pytest.mark.parametrize(
    ("lang", "says", "not_said"),
    [
        ("en", "administrator configures outgoing mail", "on its way"),
        ("fr", "l'administrateur n'a pas configuré l'envoi", "lui a été envoyé"),
    ],
)
async def test_without_a_relay_the_page_says_so_for_every_address(
    sqlite_engine: Engine, make_site: MakeSite, lang: str, says: str, not_said: str
) -> None:
    site = await make_site(sqlite_engine)
    site.config = dataclasses.replace(site.config, outbound=OutboundConfig())  # no relay
    site.client.session.cookie_jar.update_cookies({"lang": lang})
    status_known, body_known = await ask(site, STAFF)
    status_unknown, body_unknown = await ask(site, STRANGER)
    assert status_known == status_unknown == 200
    # Nothing tells a known address from an unknown one: not even the address itself.
    assert body_known == body_unknown
    text = unescape(body_known)
    assert says in text and "bridge login-link" in text
    assert not_said not in text


async def test_who_gets_a_link(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine, admins=("boss@partner.net",))
    for address in ("boss@partner.net", PARTNER, "bob@sub.example.com", STRANGER):
        assert (await ask(site, address))[0] == 200
    assert [m["To"] for m in site.mail()] == ["boss@partner.net", PARTNER, "bob@sub.example.com"]


async def test_without_staff_domains_people_known_from_mail_get_a_link(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    site.config = dataclasses.replace(site.config, bridge=BridgeConfig(), spaces=())
    with Session(sqlite_engine) as s, s.begin():
        s.add(Person(address="kay@anywhere.org", name="Kay"))
    await ask(site, "kay@anywhere.org")
    await ask(site, STAFF)
    assert [m["To"] for m in site.mail()] == ["kay@anywhere.org"]


async def test_the_mail_carries_the_link_in_the_readers_language(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    await ask(site, STAFF, **{"Accept-Language": "fr-CH, fr;q=0.9"})
    (message,) = site.mail()
    assert message["Subject"] == "Votre lien de connexion à Bridge"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Bridge-Origin"] == "bridge.example.com"
    assert message["Message-ID"].endswith("@bridge.example.com>")
    assert "dans les 15 minutes" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    token = parse_qs(urlsplit(link_in(message)).query)["t"][0]
    with Session(sqlite_engine) as s:
        row = s.execute(select(LoginToken)).scalar_one()
        assert row.token_hash == secret_hash(token)
        assert row.expires_at == START + timedelta(minutes=15)


async def test_a_bad_address_is_refused(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    status, body = await ask(site, "not an address")
    assert status == 400 and "Enter an email address." in body
    assert site.mail() == []


async def test_rate_limit_per_address_is_the_same_for_known_and_unknown(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine, login_per_address_per_hour=2)
    for address in (STAFF, STRANGER):
        assert [(await ask(site, address))[0] for _ in range(3)] == [200, 200, 429]
    status, body = await ask(site, STAFF)
    assert status == 429 and "Too many sign-in requests" in body
    assert len(site.mail()) == 2
    site.clock.advance(minutes=61)
    assert (await ask(site, STAFF))[0] == 200


async def test_rate_limit_per_client(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine, login_per_client_per_hour=3)
    statuses = [(await ask(site, f"p{i}@example.com"))[0] for i in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await site.client.post(
        "/login", data={"address": STRANGER, "csrf_token": await site.token()}
    )
    assert response.status == 429 and response.headers["Retry-After"] == "3600"


async def test_behind_a_trusted_proxy_clients_are_told_apart(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(
        sqlite_engine, login_per_client_per_hour=1, trusted_proxies=("127.0.0.1/32",)
    )
    assert (await ask(site, STAFF, **{"X-Forwarded-For": "192.0.2.10"}))[0] == 200
    assert (await ask(site, STAFF, **{"X-Forwarded-For": "192.0.2.11"}))[0] == 200
    assert (await ask(site, STAFF, **{"X-Forwarded-For": "192.0.2.11"}))[0] == 429
    with Session(sqlite_engine) as s:
        clients = set(s.execute(select(LoginToken.client)).scalars())
    assert clients == {"192.0.2.10", "192.0.2.11"}


async def test_an_untrusted_peer_cannot_pick_its_client_address(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine, login_per_client_per_hour=1)
    assert (await ask(site, STAFF, **{"X-Forwarded-For": "192.0.2.10"}))[0] == 200
    assert (await ask(site, STAFF, **{"X-Forwarded-For": "192.0.2.11"}))[0] == 429


# --- using the link -----------------------------------------------------------------


async def mailed_link(site: Site, address: str = STAFF) -> str:
    await ask(site, address)
    link = link_in(site.mail()[-1])
    return link.removeprefix("http://bridge.test")


async def test_the_link_signs_in_with_a_post_and_only_once(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    link = await mailed_link(site)
    # A mail scanner opens the link twice: nothing is used up.
    for _ in range(2):
        page = await site.client.get(link)
        assert page.status == 200
        assert page.headers["Cache-Control"] == "no-store"
    html = await page.text()
    assert 'action="/login/confirm" method="post"' in html
    token = parse_qs(urlsplit(link).query)["t"][0]
    response = await site.client.post(
        "/login/confirm",
        data={"t": token, "csrf_token": form_token(html), "next": "/settings"},
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/settings"
    settings = await site.client.get("/settings")
    assert settings.status == 200 and STAFF in await settings.text()
    with Session(sqlite_engine) as s:
        assert s.execute(select(WebSession.via)).scalars().all() == ["link"]

    # Used: the same link now says so, offers a new one, and signs nobody in.
    again = await site.client.get(link)
    body = await again.text()
    assert again.status == 410 and "This link no longer works" in body
    assert 'action="/login" method="post"' in body
    replay = await site.client.post(
        "/login/confirm", data={"t": token, "csrf_token": form_token(await settings.text())}
    )
    assert replay.status == 410
    with Session(sqlite_engine) as s:
        assert s.execute(select(func.count()).select_from(WebSession)).scalar_one() == 1


async def test_a_link_expires_after_15_minutes(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    link = await mailed_link(site)
    html = await (await site.client.get(link)).text()
    site.clock.advance(minutes=15, seconds=1)
    expired = await site.client.get(link)
    assert expired.status == 410
    token = parse_qs(urlsplit(link).query)["t"][0]
    response = await site.client.post(
        "/login/confirm", data={"t": token, "csrf_token": form_token(html)}
    )
    assert response.status == 410 and "This link no longer works" in await response.text()
    assert (await site.client.get("/settings", allow_redirects=False)).status == 303


async def test_the_session_cookie_flags(sqlite_engine: Engine, make_site: MakeSite) -> None:
    # Secure cookies: the test client's jar would drop them over http, so carry them by hand.
    site = await make_site(sqlite_engine, cookie_secure=True, session_days=7)
    now = site.clock()
    token = await site.store.write(lambda s: create_login_token(s, STAFF, "c", now))
    page = await site.client.get(f"/login/confirm?t={token}")
    anonymous = cookies_of(page.headers.getall("Set-Cookie"))["bridge_csrf"]
    assert anonymous["secure"] and anonymous["httponly"] and anonymous["samesite"] == "Lax"
    response = await site.client.post(
        "/login/confirm",
        data={"t": token, "csrf_token": form_token(await page.text())},
        headers={"Cookie": f"bridge_csrf={anonymous.value}"},
        allow_redirects=False,
    )
    assert response.status == 303
    morsel = cookies_of(response.headers.getall("Set-Cookie"))["bridge_session"]
    assert morsel["secure"] and morsel["httponly"]
    assert morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert morsel["max-age"] == str(7 * 86400)
    raw_id = site.app[SIGNER].unsign("session", morsel.value)
    with Session(sqlite_engine) as s:
        row = s.get(WebSession, secret_hash(raw_id))
        assert row is not None and row.expires_at == START + timedelta(days=7)


def cookies_of(headers: list[str]) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in headers:
        cookies.load(header)
    return cookies


async def test_next_is_never_an_open_redirect(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"):
        site.client.session.cookie_jar.clear()
        token = await site.token()
        await site.client.post(
            "/login", data={"address": STAFF, "csrf_token": token, "next": target}
        )
        link = link_in(site.mail()[-1]).removeprefix("http://bridge.test")
        assert "next=" not in link
        html = await (await site.client.get(link + "&next=" + target)).text()
        response = await site.client.post(
            "/login/confirm",
            data={
                "t": parse_qs(urlsplit(link).query)["t"][0],
                "csrf_token": form_token(html),
                "next": target,
            },
            allow_redirects=False,
        )
        assert response.headers["Location"] == "/"


async def test_the_login_page_keeps_next_through_the_mail(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    page = await site.client.get("/login?next=/t/42%3Fview%3Dflat")
    html = await page.text()
    assert 'name="next" value="/t/42?view=flat"' in html
    await site.client.post(
        "/login", data={"address": STAFF, "csrf_token": form_token(html), "next": "/t/42?view=flat"}
    )
    link = link_in(site.mail()[-1])
    assert parse_qs(urlsplit(link).query)["next"] == ["/t/42?view=flat"]


# --- sessions, sign-out ----------------------------------------------------------------


async def test_sign_out_ends_the_session_on_the_server(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    raw_id = await site.sign_in(STAFF)
    cookie = site.app[SIGNER].sign("session", raw_id)
    token = await site.token("/settings")
    response = await site.client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303
    assert 'bridge_session=""' in response.headers["Set-Cookie"]
    with Session(sqlite_engine) as s:
        assert s.execute(select(func.count()).select_from(WebSession)).scalar_one() == 0
    # The old cookie, replayed, is nobody.
    replay = await site.client.get(
        "/settings", headers={"Cookie": f"bridge_session={cookie}"}, allow_redirects=False
    )
    assert replay.status == 303 and replay.headers["Location"].startswith("/login?next=")


async def test_a_session_ends_after_session_days(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(STAFF)
    assert (await site.client.get("/settings")).status == 200
    site.clock.advance(days=30, seconds=1)
    response = await site.client.get("/settings", allow_redirects=False)
    assert response.status == 303
    assert 'bridge_session=""' in response.headers.get("Set-Cookie", "")


async def test_a_forged_cookie_is_nobody(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    raw_id = await site.sign_in(STAFF)
    forged = Signer(b"x" * 32).sign("session", raw_id)
    site.client.session.cookie_jar.clear()
    response = await site.client.get(
        "/settings", headers={"Cookie": f"bridge_session={forged}"}, allow_redirects=False
    )
    assert response.status == 303


async def test_probes_and_static_files_do_not_read_sessions(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(STAFF)
    calls: list[str] = []
    from sqlalchemy import event

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement != "BEGIN":
            calls.append(statement)

    event.listen(sqlite_engine, "before_cursor_execute", count)
    try:
        assert (await site.client.get("/static/style.css")).status == 200
        assert (await site.client.get("/metrics")).status == 200
        assert calls == []
        assert (await site.client.get("/settings")).status == 200
        # The reader and their settings come in one statement; the page adds its own.
        assert len(calls) == 2
    finally:
        event.remove(sqlite_engine, "before_cursor_execute", count)


# --- single sign-on ---------------------------------------------------------------------


async def test_sso_header_from_a_trusted_proxy_signs_in(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(
        sqlite_engine, sso_header="X-Remote-User", trusted_proxies=("127.0.0.0/8",)
    )
    headers = {"X-Remote-User": "Alice@Example.com"}
    response = await site.client.get("/settings", headers=headers)
    assert response.status == 200 and STAFF in await response.text()
    # The cookie it set is used from then on: one session, not one per request.
    assert (await site.client.get("/settings", headers=headers)).status == 200
    with Session(sqlite_engine) as s:
        rows = s.execute(select(WebSession.address, WebSession.via)).all()
    assert [tuple(r) for r in rows] == [(STAFF, "sso")]
    # Another person behind the same proxy is signed in as themselves.
    other = await site.client.get("/settings", headers={"X-Remote-User": ADMIN})
    assert ADMIN in await other.text()


async def test_sso_header_from_any_other_peer_is_ignored(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(
        sqlite_engine, sso_header="X-Remote-User", trusted_proxies=("10.0.0.0/8", "::1/128")
    )
    response = await site.client.get(
        "/settings", headers={"X-Remote-User": STAFF}, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"].startswith("/login")
    with Session(sqlite_engine) as s:
        assert s.execute(select(func.count()).select_from(WebSession)).scalar_one() == 0


async def test_without_sso_configured_the_header_means_nothing(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine, trusted_proxies=("127.0.0.0/8",))
    response = await site.client.get(
        "/settings", headers={"X-Remote-User": STAFF}, allow_redirects=False
    )
    assert response.status == 303


# --- CSRF ----------------------------------------------------------------------------------

SIGNED_IN_POSTS = ["/logout", "/settings", "/settings/feeds", "/language", "/login/confirm"]


@pytest.mark.parametrize(
    "path", [*SIGNED_IN_POSTS, "/login", "/admin/quarantine/1/retry", "/read", "/t/1/watch"]
)
async def test_every_post_without_the_form_token_is_refused(
    sqlite_engine: Engine, make_site: MakeSite, path: str
) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(ADMIN)
    good = await site.token("/settings")
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": good + "x"}):
        response = await site.client.post(path, data={**data, "lang": "fr", "address": STAFF})
        assert response.status == 403, (path, data)
        assert "did not come from this site" in await response.text()
    with Session(sqlite_engine) as s:
        assert s.execute(select(func.count()).select_from(WebSession)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(LoginToken)).scalar_one() == 0


async def test_the_token_of_another_session_is_refused(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    await site.sign_in(STAFF)
    theirs = await site.token("/settings")
    await site.sign_in(STAFF)  # a new session in this browser
    response = await site.client.post("/logout", data={"csrf_token": theirs})
    assert response.status == 403
    header = await site.client.post(
        "/logout", headers={"X-CSRF-Token": await site.token("/settings")}, allow_redirects=False
    )
    assert header.status == 303


async def test_signed_out_forms_need_the_cookie_they_came_with(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    site = await make_site(sqlite_engine)
    token = await site.token("/login")
    site.client.session.cookie_jar.clear()
    response = await site.client.post("/login", data={"address": STAFF, "csrf_token": token})
    assert response.status == 403
    assert site.mail() == []


async def test_a_signed_out_pair_the_client_chose_is_refused(
    sqlite_engine: Engine, make_site: MakeSite
) -> None:
    """The double-submit pair must be one the server signed: a planted cookie is not enough."""
    site = await make_site(sqlite_engine)
    site.client.session.cookie_jar.clear()
    chosen = "attacker-chosen-token-0123456789"
    headers = {"Cookie": f"bridge_csrf={chosen}"}
    response = await site.client.post(
        "/login", data={"address": STAFF, "csrf_token": chosen}, headers=headers
    )
    assert response.status == 403
    # A token signed for another purpose (a feed, a session) is no form token either.
    other = site.app[SIGNER].sign_timed("feed", "x")
    response = await site.client.post(
        "/login",
        data={"address": STAFF, "csrf_token": other},
        headers={"Cookie": f"bridge_csrf={other}"},
    )
    assert response.status == 403
    assert site.mail() == []
    # The pair the server handed out works.
    token = await site.token("/login")
    response = await site.client.post("/login", data={"address": STAFF, "csrf_token": token})
    assert response.status == 200 and len(site.mail()) == 1


async def test_a_signed_out_form_token_expires(
    sqlite_engine: Engine, make_site: MakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = await make_site(sqlite_engine)
    token = await site.token("/login")
    later = time.time() + 13 * 3600  # past the 12-hour lifetime
    monkeypatch.setattr(time, "time", lambda: later)
    response = await site.client.post("/login", data={"address": STAFF, "csrf_token": token})
    assert response.status == 403
    assert site.mail() == []


async def test_digest_links_are_exempt(sqlite_engine: Engine, make_site: MakeSite) -> None:
    site = await make_site(sqlite_engine)
    response = await site.client.post(
        "/digest/unsubscribe?t=whatever", data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status != 403


def test_the_hourly_maintenance_forgets_expired_sign_ins(engine: Engine) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        auth_store.create_session(session, "old@enron.com", "sso", now - timedelta(days=40), 30)
        auth_store.create_session(session, "new@enron.com", "link", now, 30)
    with Session(engine) as session, session.begin():
        maintain(session)
    with Session(engine) as session:
        left = set(session.scalars(select(WebSession.address)))
    assert left == {"new@enron.com"}
