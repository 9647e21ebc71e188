"""(being written: sign-in, sessions, CSRF)"""

from __future__ import annotations

from aiohttp import web

from bridge.web.keys import USER, VIEWER
from bridge.web.middleware import Handler


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[VIEWER] = None
    request[USER] = None
    return await handler(request)


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


def add_routes(app: web.Application) -> None:
    """Nothing yet."""
