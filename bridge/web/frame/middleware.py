"""The edges of every request: errors become one page (or one JSON shape), headers are set.

Errors are translated here only. Pages get the error page in the reader's
language; `/api/` gets `{"error": code, "message": text}`. A hidden thread
and a missing one both answer the same 404: nothing in the answer tells
them apart. Anything unexpected is logged with its traceback and answers
500 without details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.web.frame.context import render
from bridge.web.frame.keys import CSP_IMG, VIEWER

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# No inline script, no plugins, no framing; images from the page itself or
# data: URLs only. A page that shows remote images on request widens
# img-src for itself alone (`request["csp_img"]`).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:{img}; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Links inside messages lead out of the company: they must not carry thread URLs.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

MESSAGES = {
    400: "The request could not be understood.",
    401: "Sign in to see this page.",
    403: "This action is not allowed.",
    404: "There is nothing here, or it is not yours to see.",
    405: "This address does not take that method.",
    413: "The request is too large.",
    429: "Too many requests: wait a little and try again.",
    500: "Something went wrong on our side. It has been logged.",
}


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def error_response(request: web.Request, status: int, detail: str = "") -> web.Response:
    """The one error answer: JSON for the API, the error page for people."""
    message = detail or MESSAGES.get(status, "Error")
    if _wants_json(request):
        code = {404: "not_found", 401: "unauthorized", 400: "bad_request"}.get(status, str(status))
        return web.json_response({"error": code, "message": message}, status=status)
    try:
        return render(request, "error.html", {"status": status, "message": message}, status)
    except Exception:  # the error page itself must not fail
        log.exception("rendering the error page failed")
        return web.Response(text=message, status=status, content_type="text/plain")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.empty_body or exc.content_type == "application/json":
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
        response = error_response(request, exc.status, detail)
        for name in ("Retry-After", "Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(request, 500)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer gets the CSP and its companions."""
    extra = request.get(CSP_IMG, "")
    response.headers.setdefault(
        "Content-Security-Policy", CSP.format(img=f" {extra}" if extra else "")
    )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.get(VIEWER) is not None:
        response.headers.setdefault("Cache-Control", "private, no-cache")
