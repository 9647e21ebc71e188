"""A person's own settings (language, time zone, digests, feed links) and the language switch."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.orm import Session

from bridge.i18n import LANGUAGES, timezone_names
from bridge.web.account import auth_store
from bridge.web.account.auth import safe_next
from bridge.web.frame.context import LANGUAGE_COOKIE, render, require_viewer
from bridge.web.frame.keys import config_of, now_of, signer_of, store_of

YEAR = 365 * 86400


async def switch_language(request: web.Request) -> web.StreamResponse:
    """Remember the chosen interface language in a cookie and go back where the reader was."""
    form = await request.post()
    chosen = str(form.get("lang", ""))
    if chosen not in LANGUAGES:
        raise web.HTTPBadRequest()
    response = web.HTTPSeeOther(safe_next(str(form.get("next", ""))) or "/")
    response.set_cookie(
        LANGUAGE_COOKIE,
        chosen,
        max_age=YEAR,
        path="/",
        secure=config_of(request).web.cookie_secure,
        httponly=True,
        samesite="Lax",
    )
    raise response


async def settings_page(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    user = await store_of(request).read(lambda s: _settings_of(s, viewer.address))
    return _render(request, user, saved=request.query.get("saved", ""))


def _settings_of(session: Session, address: str) -> dict[str, object]:
    row = auth_store.get_user(session, address)
    if row is None:
        return {"language": "", "timezone": "", "digest_frequency": "", "feed_epoch": 0}
    return {
        "language": row.language,
        "timezone": row.timezone,
        "digest_frequency": row.digest_frequency,
        "feed_epoch": row.feed_epoch,
    }


def _render(
    request: web.Request,
    user: dict[str, object],
    saved: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    viewer = require_viewer(request)
    config = config_of(request)
    token = auth_store.feed_token(signer_of(request), viewer.address, int(str(user["feed_epoch"])))
    base = config.web.public_url
    names = {space.slug: space.name for space in config.spaces}
    feeds = [
        (names.get(slug, slug), f"{base}/feeds/s/{slug}.atom?token={token}")
        for slug in sorted(viewer.spaces)
    ]
    context = {
        "user": user,
        "zones": timezone_names(),
        "feed_token": token,
        "feeds": feeds,
        "thread_feed": f"{base}/feeds/t/<id>.atom?token={token}",
        "saved": saved,
        "errors": errors or {},
        "default_timezone": config.web.default_timezone,
    }
    response = render(request, "settings.html", context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def save_settings(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    form = await request.post()
    values = {
        "language": str(form.get("language", "")),
        "timezone": str(form.get("timezone", "")),
        "digest_frequency": str(form.get("digest_frequency", "")),
    }
    errors: dict[str, str] = {}
    if values["language"] not in ("", *LANGUAGES):
        errors["language"] = "Choose a language from the list."
    if values["timezone"] and values["timezone"] not in set(timezone_names()):
        errors["timezone"] = "Choose a time zone from the list."
    if values["digest_frequency"] not in auth_store.FREQUENCIES:
        errors["digest_frequency"] = "Choose how often digests come."
    if errors:
        current = await store_of(request).read(lambda s: _settings_of(s, viewer.address))
        return _render(request, {**current, **values}, errors=errors, status=400)
    now = now_of(request)
    await store_of(request).write(
        lambda s: auth_store.update_user(s, viewer.address, now, **values)
    )
    response = web.HTTPSeeOther("/settings?saved=1")
    # The saved language rules from now on, not an earlier switch.
    response.del_cookie(LANGUAGE_COOKIE, path="/")
    raise response


async def new_feed_links(request: web.Request) -> web.StreamResponse:
    """Revoke every feed link the reader handed out, and make new ones."""
    viewer = require_viewer(request)
    now = now_of(request)
    await store_of(request).write(lambda s: auth_store.bump_feed_epoch(s, viewer.address, now))
    raise web.HTTPSeeOther("/settings?saved=feeds")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/language", switch_language)
    app.router.add_get("/settings", settings_page)
    app.router.add_post("/settings", save_settings)
    app.router.add_post("/settings/feeds", new_feed_links)
