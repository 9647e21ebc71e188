"""The aiohttp application: the viewer, its API, `/healthz` and `/metrics`.

`make_app` takes what it shows, not the daemon, so it is tested on its own:
the store, the current configuration (a function: SIGHUP reloads it), the
signing key, the status registry the sources fill
(`status["imap:sales"] = {"state": "idle", "lag_seconds": 0.4}`) and the
metrics.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import text

from bridge.config import Config
from bridge.signing import Signer
from bridge.store.runner import StoreRunner
from bridge.web import admin, api, auth, feeds, unsubscribe, views
from bridge.web.keys import CLOCK, CONFIG, PAGE_CACHE, SIGNER, STORE
from bridge.web.metrics import CONTENT_TYPE_LATEST, Metrics
from bridge.web.middleware import errors, security_headers
from bridge.web.page_cache import PageCache

Status = Mapping[str, Mapping[str, Any]]

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
STATUS: web.AppKey[Callable[[], Status]] = web.AppKey("status")
STATIC = Path(__file__).parent / "static"
# Forms and API bodies are small; anything larger is refused with 413.
MAX_REQUEST_BYTES = 64 * 1024


def make_app(
    store: StoreRunner,
    metrics: Metrics,
    status: Callable[[], Status],
    config: Callable[[], Config] | None = None,
    signer: Signer | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[errors, auth.sessions, auth.csrf],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[STORE] = store
    app[METRICS] = metrics
    app[STATUS] = status
    default = Config()
    app[CONFIG] = config or (lambda: default)
    # Without a kept key (tests), sign-ins last as long as the process.
    app[SIGNER] = signer or Signer(secrets.token_bytes(32))
    app[CLOCK] = lambda: datetime.now(UTC)
    app[PAGE_CACHE] = PageCache()
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_static("/static", STATIC, append_version=False)
    auth.add_routes(app)
    views.add_routes(app)
    api.add_routes(app)
    admin.add_routes(app)
    unsubscribe.add_routes(app)
    feeds.add_routes(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """200 while the database answers (503 otherwise), with every source's state.

    A source whose status says `"ok": False` (an IMAP account that cannot log
    in) makes the answer "degraded" but still 200: the process is alive and
    the other sources go on; restarting it would not help.
    """
    body: dict[str, Any] = {"status": "ok", "database": "ok"}
    try:
        await request.app[STORE].read(lambda s: s.execute(text("SELECT 1")).scalar())
    except Exception as exc:
        body.update(status="error", database=f"{type(exc).__name__}: {exc}"[:300])
    sources = {name: dict(state) for name, state in request.app[STATUS]().items()}
    body["sources"] = sources
    if body["status"] == "ok" and any(s.get("ok") is False for s in sources.values()):
        body["status"] = "degraded"
    return web.json_response(body, status=503 if body["status"] == "error" else 200)


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
