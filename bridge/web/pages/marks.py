"""The reader's marks from the viewer: follow or mute a thread, mark everything read.

Plain forms (POST with the form token; `auth.csrf` checks it), answered
with a redirect, so they work without JavaScript. A thread the reader may
not see answers exactly like a missing one (404), and nothing is written.
The same actions for scripts are in `bridge.web.json_api.handlers`.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from sqlalchemy.orm import Session

from bridge.core.access import Viewer
from bridge.store.read import browse, marks
from bridge.web.account.auth import safe_next
from bridge.web.frame.context import require_viewer
from bridge.web.frame.keys import now_of, store_of


def add_routes(app: web.Application) -> None:
    app.router.add_post(r"/t/{thread_id:\d{1,12}}/watch", watch)
    app.router.add_post("/read", mark_all_read)


def set_watch(
    session: Session, viewer: Viewer, asked: int, choice: str, now: datetime
) -> int | None:
    """Follow/mute the thread (a merged thread's old id names the one it joined).

    The thread it was applied to, or None when the viewer may not see it
    (or it does not exist: the same queries run either way).
    """
    current = browse.resolve_thread_id(session, asked)
    target = current if current is not None else browse.in_range(asked)
    done = marks.set_watch(session, viewer, target, choice, now)
    return target if done and current is not None else None


async def watch(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    asked = int(request.match_info["thread_id"])
    form = await request.post()
    choice = str(form.get("watch", ""))
    if choice not in marks.WATCHES:
        raise web.HTTPBadRequest(text="watch must be follow, mute or empty")
    now = now_of(request)
    done = await store_of(request).write(lambda s: set_watch(s, viewer, asked, choice, now))
    if done is None:
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther(f"/t/{done}")


async def mark_all_read(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    form = await request.post()
    now = now_of(request)
    await store_of(request).write(lambda s: marks.mark_all_read(s, viewer, now))
    raise web.HTTPSeeOther(safe_next(str(form.get("next", ""))) or "/")
