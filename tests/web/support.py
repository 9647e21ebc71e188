"""Shared by the viewer's tests: a store of real mail, an app over it, a signed-in reader.

`imported(engine, dirs, config_text)` runs the real import with the config's
rules and returns the Config; `viewer_app(engine, config)` builds the
aiohttp app over that store; `sign_in(app, address)` makes a session the
way sign-in does and returns the cookie header value to send.
"""

from __future__ import annotations

import email
import tomllib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config, parse_config
from bridge.core.access import Viewer, viewer_for
from bridge.ingest.files import run_import
from bridge.store.runner import StoreRunner
from bridge.store.tables import Message, Outbox
from bridge.web.account.auth_store import create_session
from bridge.web.app import make_app
from bridge.web.frame.keys import SIGNER, STORE
from bridge.web.frame.metrics import Metrics
from tests.access_setup import SPACES_AND_RULES
from tests.conftest import DATA

ENRON = DATA / "enron" / "maildir"
LKML = DATA / "threads" / "notmuch" / "lkml"
MIME = DATA / "mime"

SESSION_COOKIE = "bridge_session"

# Spaces and rules over Enron's maildir and the lkml RapidIO thread (as in
# tests/store/test_access.py): West Position is private to its parties, SoCal
# is in "gas" (members only), Heads up is in "trading" (open to staff),
# Michael Neuling's lkml messages are private in "rio".
CONFIG = (
    """
[bridge]
staff_domains = ["enron.com"]

[web]
cookie_secure = false

"""
    + SPACES_AND_RULES
)


def config_from(text: str) -> Config:
    return parse_config(tomllib.loads(text), "bridge.toml")


def imported(engine: Engine, dirs: Iterable[Path], config_text: str = CONFIG) -> Config:
    """Import `dirs` through the real pipeline under the config's rules; the Config."""
    config = config_from(config_text)
    result = run_import(engine, [str(d) for d in dirs], workers=1, rules=config.ruleset)
    assert result.tally.outcomes["quarantined"] == 0
    return config


def viewer_of(config: Config, address: str) -> Viewer:
    return viewer_for(address, config.spaces, config.staff_domains)


def viewer_app(
    engine: Engine, config: Config, status: dict[str, dict[str, object]] | None = None
) -> web.Application:
    """The viewer over the store at `engine`; the runner is closed with the app.

    `status` stands for what the daemon's sources report (IMAP accounts, say).
    """
    store = StoreRunner(engine, read_threads=2)
    live = status if status is not None else {}
    app = make_app(store, Metrics(), lambda: live, config=lambda: config)

    async def close(app: web.Application) -> None:
        app[STORE]._readers.shutdown(wait=True)
        app[STORE]._writer.shutdown(wait=True)

    app.on_cleanup.append(close)
    return app


def sign_in(app: web.Application, address: str) -> dict[str, str]:
    """Headers that make a request come from `address`, signed in."""
    engine = app[STORE].engine
    with Session(engine) as session, session.begin():
        raw = create_session(session, address, "link", datetime.now(UTC), 1)
    return {"Cookie": f"{SESSION_COOKIE}={app[SIGNER].sign('session', raw)}"}


def thread_id(engine: Engine, subject_start: str) -> int:
    """The thread of the oldest message whose subject starts with `subject_start`."""
    with Session(engine) as session:
        return session.execute(
            select(Message.thread_id)
            .where(Message.subject.startswith(subject_start))
            .order_by(Message.sort_date)
            .limit(1)
        ).scalar_one()


@dataclass
class Site:
    """The viewer listening on a loopback port (for Chromium), and a reader's cookie."""

    server: TestServer
    cookie: str
    engine: Engine

    @property
    def origin(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@asynccontextmanager
async def served(
    engine: Engine, dirs: Iterable[Path], config_text: str, reader: str
) -> AsyncIterator[Site]:
    """`dirs` imported under `config_text`, the viewer over them served, `reader` signed in."""
    config = imported(engine, dirs, config_text)
    app = viewer_app(engine, config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cookie = sign_in(app, reader)["Cookie"].split("=", 1)[1]
    try:
        yield Site(server, cookie, engine)
    finally:
        await server.close()


def queued_mail(engine: Engine) -> list[tuple[list[str], EmailMessage]]:
    """The outbox, oldest first: each message's recipients and the message."""
    with Session(engine) as session:
        rows = session.execute(select(Outbox.recipients, Outbox.data).order_by(Outbox.id)).all()
    return [
        (r.recipients.split("\n"), email.message_from_bytes(r.data, policy=policy.default))
        for r in rows
    ]  # type: ignore[misc]
