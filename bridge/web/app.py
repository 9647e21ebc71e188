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
from bridge.web.account import auth, unsubscribe
from bridge.web.frame.keys import CLOCK, CONFIG, PAGE_CACHE, SEND_NOW, SIGNER, STORE
from bridge.web.frame.metrics import CONTENT_TYPE_LATEST, Metrics
from bridge.web.frame.middleware import errors, security_headers
from bridge.web.frame.page_cache import PageCache
from bridge.web.json_api import handlers as api
from bridge.web.pages import admin, feeds, marks, views, writing

Status = Mapping[str, Mapping[str, Any]]

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
STATUS: web.AppKey[Callable[[], Status]] = web.AppKey("status")
STATIC = Path(__file__).parent / "static"
# Forms and API bodies are small; anything larger is refused with 413 (the
# reply form, which carries files, has its own limit: writing.uploads).
MAX_REQUEST_BYTES = 64 * 1024


def make_app(
    store: StoreRunner,
    metrics: Metrics,
    status: Callable[[], Status],
    config: Callable[[], Config] | None = None,
    signer: Signer | None = None,
    send_now: Callable[[], None] | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[writing.uploads, errors, auth.sessions, auth.csrf],
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
    app[SEND_NOW] = send_now or (lambda: None)
    app[PAGE_CACHE] = PageCache()
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_static("/static", STATIC, append_version=False)
    auth.add_routes(app)
    views.add_routes(app)
    marks.add_routes(app)
    api.add_routes(app)
    admin.add_routes(app)
    unsubscribe.add_routes(app)
    feeds.add_routes(app)
    writing.add_routes(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    """Every part's state; 503 when the daemon cannot do its job, for load balancers.

    "error" (503): the database does not answer, or a source marked `fatal`
    is failing (the store refuses writes, so mail gets 451). "degraded": a
    source says `"ok": False` (an IMAP account that cannot log in, old mail
    waiting in the outbox); still 200 by default, since restarting or
    routing around this process would not help, but 503 with `?strict=1`
    for monitoring that must page someone.
    """
    body: dict[str, Any] = {"status": "ok", "database": "ok"}
    try:
        await request.app[STORE].read(lambda s: s.execute(text("SELECT 1")).scalar())
    except Exception as exc:
        body.update(status="error", database=f"{type(exc).__name__}: {exc}"[:300])
    sources = {name: dict(state) for name, state in request.app[STATUS]().items()}
    try:
        sources["outbox"] = await request.app[STORE].read(outbox_health)
    except Exception as exc:  # the database error above says it already
        sources["outbox"] = {"ok": False, "error": type(exc).__name__}
    body["sources"] = sources
    failing = [name for name, s in sources.items() if s.get("ok") is False]
    if any(sources[name].get("fatal") for name in failing):
        body["status"] = "error"
    if body["status"] == "ok" and failing:
        body["status"] = "degraded"
    body["failing"] = failing
    strict = request.query.get("strict") in ("1", "true", "yes")
    bad = body["status"] == "error" or (strict and body["status"] == "degraded")
    return web.json_response(body, status=503 if bad else 200)


OUTBOX_LATE = 3600  # seconds: mail waiting longer than this makes health "degraded"


def outbox_health(session: Any) -> dict[str, Any]:
    """Mail Bridge sends (sign-in links, digests): what waits, since when, what failed."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from bridge.store.tables import Outbox

    oldest = session.execute(
        select(func.min(Outbox.created_at)).where(Outbox.status == "pending")
    ).scalar()
    counts = dict(
        session.execute(select(Outbox.status, func.count()).group_by(Outbox.status)).all()
    )
    waiting = 0.0
    if oldest is not None:
        if isinstance(oldest, str):  # SQLite, through an aggregate: no column type applied
            oldest = datetime.fromisoformat(oldest)
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        waiting = (datetime.now(UTC) - oldest).total_seconds()
    return {
        "ok": waiting <= OUTBOX_LATE,
        "pending": counts.get("pending", 0),
        "failed": counts.get("failed", 0),
        "oldest_pending_seconds": round(waiting),
    }


async def metrics_view(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
