"""The digest's signed links: GET changes nothing (link scanners), POST acts (RFC 8058)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.outbound.digest_render import FREQUENCY_PATH, UNSUBSCRIBE_PATH, frequency_token
from bridge.signing import FEED, Signer
from bridge.store.tables import User
from bridge.web.frame.keys import SIGNER
from tests.web.support import config_from, viewer_app

ADDRESS = "kam.keiser@enron.com"
CONFIG = '[web]\nbase_url = "https://bridge.example.com"\n'


def frequency(engine: Engine, address: str = ADDRESS) -> str | None:
    with Session(engine) as session:
        return session.execute(
            select(User.digest_frequency).where(User.address == address)
        ).scalar()


async def client_for(aiohttp_client: Any, engine: Engine) -> tuple[TestClient, Signer]:
    app = viewer_app(engine, config_from(CONFIG))
    return await aiohttp_client(app), app[SIGNER]


async def test_get_shows_a_button_and_changes_nothing(aiohttp_client: Any, engine: Engine) -> None:
    client, signer = await client_for(aiohttp_client, engine)
    token = frequency_token(signer, ADDRESS, "off")
    for _ in range(3):  # a mail provider's link scanner fetching it again and again
        response = await client.get(UNSUBSCRIBE_PATH, params={"t": token})
        assert response.status == 200
        page = await response.text()
        assert 'method="post"' in page and ADDRESS in page
        assert response.headers["Cache-Control"] == "no-store"
    assert frequency(engine) is None


async def test_one_click_post_unsubscribes_without_cookie_or_form_token(
    aiohttp_client: Any,
    engine: Engine,
) -> None:
    client, signer = await client_for(aiohttp_client, engine)
    token = frequency_token(signer, ADDRESS, "off")
    # Exactly what a mail client sends for List-Unsubscribe-Post (RFC 8058 section 3.1).
    response = await client.post(
        f"{UNSUBSCRIBE_PATH}?t={token}",
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 200
    assert frequency(engine) == "off"
    # Twice is the same as once.
    again = await client.post(f"{UNSUBSCRIBE_PATH}?t={token}", data="List-Unsubscribe=One-Click")
    assert again.status == 200 and frequency(engine) == "off"


async def test_switch_links_set_the_frequency_they_name(
    aiohttp_client: Any, engine: Engine
) -> None:
    client, signer = await client_for(aiohttp_client, engine)
    with Session(engine) as session, session.begin():
        session.add(User(address=ADDRESS, created_at=datetime.now(UTC), language="fr"))
    for wanted in ("daily", "weekly"):
        token = frequency_token(signer, ADDRESS, wanted)
        response = await client.post(FREQUENCY_PATH, params={"t": token})
        assert response.status == 200
        assert frequency(engine) == wanted
    with Session(engine) as session:
        assert session.get_one(User, ADDRESS).language == "fr"  # nothing else changed


async def test_forged_or_foreign_tokens_are_refused(aiohttp_client: Any, engine: Engine) -> None:
    client, signer = await client_for(aiohttp_client, engine)
    good = frequency_token(signer, ADDRESS, "off")
    other_key = frequency_token(Signer(b"k" * 32), ADDRESS, "off")
    other_purpose = signer.sign(FEED, {"a": ADDRESS, "f": "off"})
    bad_frequency = signer.sign("unsubscribe", {"a": ADDRESS, "f": "hourly"})
    for token in (good[:-2] + "xx", other_key, other_purpose, bad_frequency, ""):
        response = await client.post(UNSUBSCRIBE_PATH, params={"t": token})
        assert response.status == 400, token
        response = await client.get(UNSUBSCRIBE_PATH, params={"t": token})
        assert response.status == 400, token
    assert frequency(engine) is None
