"""Digest links: unsubscribe (RFC 8058 one-click) and switching between daily and weekly.

The signed token in the link names the address and the frequency, and is
the only authority: no session, cookie or form token is needed (the paths
are exempt from the CSRF check). A GET only shows a page with a button, so
the link scanners of mail providers, which fetch every link, change
nothing; the POST of that button, or a mail client's one-click POST with
`List-Unsubscribe=One-Click`, acts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy.orm import Session

from bridge.i18n import translator
from bridge.outbound.digest_render import FREQUENCY_PATH, UNSUBSCRIBE_PATH, read_frequency_token
from bridge.outbound.digests import set_frequency
from bridge.web.frame.context import language, render
from bridge.web.frame.keys import signer_of, store_of


async def _token(request: web.Request) -> tuple[str, str] | None:
    token = request.query.get("t", "")
    if not token and request.method == "POST":
        token = str((await request.post()).get("t", ""))
    return read_frequency_token(signer_of(request), token) if token else None


def _words(request: web.Request, address: str, frequency: str) -> dict[str, str]:
    _ = translator(language(request))
    if frequency == "off":
        return {
            "heading": _("Unsubscribe from digests"),
            "message": _("Stop sending digests to {address}?").format(address=address),
            "button": _("Unsubscribe"),
            "done": _("{address} will get no more digests.").format(address=address),
        }
    ask = (
        _("Send {address} a digest every day?")
        if frequency == "daily"
        else _("Send {address} a digest every week?")
    )
    done = (
        _("{address} will get a digest every day.")
        if frequency == "daily"
        else _("{address} will get a digest every week.")
    )
    return {
        "heading": _("Digest frequency"),
        "message": ask.format(address=address),
        "button": _("Confirm"),
        "done": done.format(address=address),
    }


def _invalid(request: web.Request) -> web.Response:
    _ = translator(language(request))
    context = {"heading": _("This link is not valid"), "state": "invalid"}
    return _no_store(render(request, "digest_frequency.html", context, status=400))


def _no_store(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def confirm_page(request: web.Request) -> web.Response:
    """GET: what the link would do, and a button to do it. Changes nothing."""
    found = await _token(request)
    if found is None:
        return _invalid(request)
    address, frequency = found
    words = _words(request, address, frequency)
    context = {**words, "state": "ask", "action": request.path_qs}
    return _no_store(render(request, "digest_frequency.html", context))


async def apply(request: web.Request) -> web.Response:
    """POST: set the frequency the signed link names (RFC 8058 one-click included)."""
    found = await _token(request)
    if found is None:
        return _invalid(request)
    address, frequency = found
    now = datetime.now(UTC)

    def write(session: Session) -> None:
        set_frequency(session, address, frequency, now)

    await store_of(request).write(write)
    words = _words(request, address, frequency)
    context = {"heading": words["heading"], "message": words["done"], "state": "done"}
    return _no_store(render(request, "digest_frequency.html", context))


def add_routes(app: web.Application) -> None:
    for path in (UNSUBSCRIBE_PATH, FREQUENCY_PATH):
        app.router.add_get(path, confirm_page)
        app.router.add_post(path, apply)
