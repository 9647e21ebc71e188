"""The aiohttp application: `/healthz` and `/metrics` (the viewer joins later).

`make_app` takes what it shows, not the daemon, so it is tested on its own:
the store (is the database reachable), the status registry the sources fill
(`status["imap:sales"] = {"state": "idle", "lag_seconds": 0.4}`) and the
metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from sqlalchemy import text

from bridge.store.runner import StoreRunner
from bridge.web.metrics import CONTENT_TYPE_LATEST, Metrics

Status = Mapping[str, Mapping[str, Any]]

STORE: web.AppKey[StoreRunner] = web.AppKey("store", StoreRunner)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
STATUS: web.AppKey[Callable[[], Status]] = web.AppKey("status")


def make_app(store: StoreRunner, metrics: Metrics, status: Callable[[], Status]) -> web.Application:
    app = web.Application()
    app[STORE] = store
    app[METRICS] = metrics
    app[STATUS] = status
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
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
