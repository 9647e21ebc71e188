"""What every page needs: who is reading, in which language and time zone, and rendering.

The session middleware (bridge.web.account.auth) puts the reader on the request:
`request["viewer"]` (a `bridge.core.access.Viewer`, or None when signed
out) and `request["user"]` (their `UserPrefs`, or None). Everything else
here is derived from those and the configuration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from bridge.core.access import Viewer
from bridge.i18n import (
    LANGUAGES,
    format_date,
    format_datetime,
    is_zone_name,
    negotiate,
    translator,
    zone,
)
from bridge.web.account.auth_store import feed_token
from bridge.web.frame.keys import CSRF_TOKEN, USER, VIEWER, config_of, signer_of

LANGUAGE_COOKIE = "lang"
TIMEZONE_COOKIE = "tz"

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("bridge.web", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def viewer(request: web.Request) -> Viewer | None:
    return request.get(VIEWER)


def require_viewer(request: web.Request) -> Viewer:
    """The signed-in reader; otherwise off to sign in (pages) or 401 (the API)."""
    found = viewer(request)
    if found is not None:
        return found
    if request.path.startswith("/api/"):
        raise web.HTTPUnauthorized(
            text='{"error": "unauthorized", "message": "sign in first"}',
            content_type="application/json",
        )
    raise web.HTTPSeeOther(f"/login?next={_quote(request.path_qs)}")


def is_admin(request: web.Request) -> bool:
    found = viewer(request)
    admins = {a.strip().lower() for a in config_of(request).web.admins}
    return found is not None and found.address in admins


def language(request: web.Request) -> str:
    """The interface language: the reader's choice, their settings, then the browser's."""
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    prefs = request.get(USER)
    if prefs is not None and prefs.language in LANGUAGES:
        return prefs.language
    default = config_of(request).web.default_language
    return negotiate(request.headers.get("Accept-Language", ""), default)


def timezone(request: web.Request) -> ZoneInfo:
    """The reader's zone: their settings, then what their browser said, then the default."""
    fallback = config_of(request).web.default_timezone
    prefs = request.get(USER)
    if prefs is not None and prefs.timezone:
        return zone(prefs.timezone, fallback)
    return zone(browser_zone(request.cookies.get(TIMEZONE_COOKIE, "")) or fallback, fallback)


def browser_zone(cookie: str) -> str | None:
    """The zone named by the `tz` cookie, which app.js writes URL-encoded; None if not a zone."""
    name = unquote(cookie).strip()
    return name if is_zone_name(name) else None


def feed_url(request: web.Request, path: str) -> str:
    """The reader's own link to the Atom feed at `path` (`/feeds/t/42.atom`); "" signed out."""
    prefs = request.get(USER)
    if prefs is None:
        return ""
    token = feed_token(signer_of(request), prefs.address, prefs.feed_epoch)
    return f"{config_of(request).web.public_url}{path}?token={token}"


def page_context(request: web.Request) -> dict[str, Any]:
    """Names every template may use."""
    lang = language(request)
    tz = timezone(request)
    _ = translator(lang)

    def when(value: datetime | None, form: str = "medium") -> str:
        return format_datetime(value, lang, tz, form) if value else ""

    def day(value: datetime | None, form: str = "medium") -> str:
        return format_date(value, lang, tz, form) if value else ""

    names = {space.slug: space.name for space in config_of(request).spaces if space.name}

    def space_name(slug: str) -> str:
        """What people call the space (its configured name); the slug when it has none."""
        return names.get(slug, slug)

    return {
        "_": _,
        "lang": lang,
        "tz": tz.key,
        "when": when,
        "day": day,
        "space_name": space_name,
        "viewer": viewer(request),
        "is_admin": is_admin(request),
        "csrf_token": request.get(CSRF_TOKEN, ""),
        "request_path": request.path_qs,
    }


def render(
    request: web.Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    """The page `name` (a template) for this reader, as an HTML response."""
    values = page_context(request)
    values.update(context or {})
    body = templates.get_template(name).render(values)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _quote(path: str) -> str:
    return quote(path, safe="/")
