"""What the web application holds, and how handlers reach it.

The configuration can change under a running app (SIGHUP reloads rules,
spaces and admins), so the app holds a function that returns the current
one: handlers call `config_of(request)` every time, never keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.config import Config
from bridge.core.access import Viewer
from bridge.signing import Signer

if TYPE_CHECKING:
    from bridge.web.frame.page_cache import PageCache
from bridge.store.runner import StoreRunner

STORE: web.AppKey[StoreRunner] = web.AppKey("store", StoreRunner)
CONFIG: web.AppKey[Callable[[], Config]] = web.AppKey("config")
SIGNER: web.AppKey[Signer] = web.AppKey("signer", Signer)
# The current time (aware, UTC): tests move it to expire links and sessions.
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
# Called after a request queued mail a person is waiting on (a reply, a
# sign-in link): the daemon's outbox job runs at once instead of at its poll.
SEND_NOW: web.AppKey[Callable[[], None]] = web.AppKey("send_now")
# Rendered page bodies, per reader (bridge.web.frame.page_cache).
PAGE_CACHE: web.AppKey[PageCache] = web.AppKey("page_cache")

# Set on every request by the session middleware (bridge.web.account.auth):
# the signed-in reader (None when signed out) and their own settings.
VIEWER: web.RequestKey[Viewer | None] = web.RequestKey("viewer")
USER: web.RequestKey[UserPrefs | None] = web.RequestKey("user")
# The form token of this request's session ("" when signed out).
CSRF_TOKEN: web.RequestKey[str] = web.RequestKey("csrf_token", str)
# Extra img-src sources for this page alone (remote images the reader asked for).
CSP_IMG: web.RequestKey[str] = web.RequestKey("csp_img", str)


@dataclass(frozen=True, slots=True)
class UserPrefs:
    """A signed-in person's own settings; empty strings mean the default."""

    address: str
    language: str = ""
    timezone: str = ""
    digest_frequency: str = ""
    feed_epoch: int = 0  # part of their feed tokens (see auth_store.feed_token)


def store_of(request: web.Request) -> StoreRunner:
    return request.app[STORE]


def config_of(request: web.Request) -> Config:
    return request.app[CONFIG]()


def signer_of(request: web.Request) -> Signer:
    return request.app[SIGNER]


def now_of(request: web.Request) -> datetime:
    return request.app[CLOCK]()


def send_now(request: web.Request) -> None:
    """Have the outbox sent now (after the transaction that queued mail committed)."""
    request.app[SEND_NOW]()
