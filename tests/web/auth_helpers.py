"""A viewer app on a real store for sign-in, settings and admin tests, with a clock they move."""

from __future__ import annotations

import dataclasses
import email
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import BridgeConfig, Config, OutboundConfig, WebConfig
from bridge.core.admin_rules.matchers import Patterns
from bridge.core.admin_rules.rules import Space
from bridge.store.runner import StoreRunner
from bridge.store.tables import Outbox
from bridge.web.account.auth_store import create_session
from bridge.web.app import make_app
from bridge.web.frame.keys import CLOCK, SIGNER
from bridge.web.frame.metrics import Metrics

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
STAFF = "alice@example.com"
ADMIN = "root@example.com"
PARTNER = "partner@outside.org"  # not staff, but a member of the "ops" space
STRANGER = "nobody@elsewhere.net"


class Clock:
    """The app's clock: tests move it forward."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def base_config(**web: Any) -> Config:
    settings: dict[str, Any] = {
        "cookie_secure": False,
        "base_url": "http://bridge.test",
        "admins": (ADMIN,),
    }
    settings.update(web)
    return Config(
        web=WebConfig(**settings),
        bridge=BridgeConfig(
            staff_domains=("example.com",),
            message_id_domain="bridge.example.com",
            address="bridge@example.com",
        ),
        # A relay is set: sign-in links are mailed (the app itself never connects to it).
        outbound=OutboundConfig(host="relay.example.com", from_address="bridge@example.com"),
        spaces=(Space("ops", "Operations", Patterns.of((PARTNER,))),),
    )


@dataclass
class Site:
    """One running app: its test client, store, clock and (changeable) configuration."""

    app: web.Application
    client: TestClient[web.Request, web.Application]
    store: StoreRunner
    engine: Engine
    clock: Clock
    config: Config
    status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def configure(self, **web: Any) -> None:
        self.config = dataclasses.replace(
            self.config, web=dataclasses.replace(self.config.web, **web)
        )

    async def sign_in(self, address: str, via: str = "link") -> str:
        """Sign the client in as `address` through the store, as the contract says; the raw id."""
        now = self.clock()
        raw_id = await self.store.write(lambda s: create_session(s, address, via, now, 30))
        self.client.session.cookie_jar.update_cookies(
            {"bridge_session": self.app[SIGNER].sign("session", raw_id)}
        )
        return raw_id

    async def token(self, path: str = "/login") -> str:
        """The form token of the page at `path` (GET), as a browser would read it."""
        response = await self.client.get(path, allow_redirects=False)
        return form_token(await response.text())

    def mail(self) -> list[EmailMessage]:
        with Session(self.engine) as session:
            rows = session.execute(select(Outbox.data).order_by(Outbox.id)).scalars().all()
        return [
            email.message_from_bytes(data, policy=policy.default)  # type: ignore[misc]
            for data in rows
        ]


MakeSite = Callable[..., Awaitable[Site]]


@pytest.fixture
def make_site(aiohttp_client: Any) -> Iterator[MakeSite]:
    """`await make_site(engine, **web_settings)`: an app on that store, its client, its clock."""
    stores: list[StoreRunner] = []

    async def make(engine: Engine, config: Config | None = None, **web: Any) -> Site:
        store = StoreRunner(engine)
        stores.append(store)
        clock = Clock()
        holder: list[Site] = []
        status: dict[str, dict[str, Any]] = {}
        app = make_app(store, Metrics(), lambda: status, config=lambda: holder[0].config)
        app[CLOCK] = clock
        client = await aiohttp_client(app)
        site = Site(app, client, store, engine, clock, config or base_config(**web), status)
        holder.append(site)
        return site

    yield make
    for store in stores:
        store.close()


_TOKEN = re.compile(r'name="csrf_token" value="([^"]*)"')


def form_token(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def link_in(message: EmailMessage, origin: str = "http://bridge.test") -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = re.search(re.escape(origin) + r"/login/confirm\?t=\S+", body.get_content())
    assert found, "the mail has no sign-in link"
    return found.group(0)
