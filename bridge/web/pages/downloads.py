"""Originals and attachments, always as downloads.

Everything here is bytes from strangers, so the answer never lets a
browser render it in our origin: every download is
`application/octet-stream` (not only the types known to be active: a
list of dangerous types is never complete, and browsers sniff), with
`Content-Disposition: attachment`, `nosniff`, and a CSP that sandboxes the
document should it be opened anyway. The filename is cut to something
safe in both forms of the header.

The one exception: raster images (PNG, JPEG, GIF, WebP) keep their type, so
`cid:` images in a message's HTML display. No browser runs anything in
those types, and `nosniff` stops it reading them as anything else. SVG is
not among them: it is a document that can carry script.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from aiohttp import web

from bridge.store.read import browse
from bridge.web.frame.context import require_viewer
from bridge.web.frame.keys import store_of

_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 ._()+,=@\[\]-]")
MAX_NAME = 150


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/raw/{pk:\d{1,12}}", original)
    app.router.add_get(r"/a/{pk:\d{1,12}}/{position:\d{1,9}}", attachment)


def safe_filename(name: str, fallback: str) -> str:
    """The name without paths, control characters, quotes or leading dots; `fallback` if empty."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in "\"'`<>|:*?;")
    name = name.strip().lstrip(".").strip()
    return name[:MAX_NAME] or fallback


def disposition(name: str) -> str:
    """`attachment` with an ASCII filename and the exact one in RFC 5987 form."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = _UNSAFE_ASCII.sub("_", ascii_name).strip() or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


INERT_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


def download(data: bytes, name: str, content_type: str = "") -> web.Response:
    kept = content_type.strip().lower()
    return web.Response(
        body=data,
        headers={
            "Content-Type": kept if kept in INERT_IMAGES else "application/octet-stream",
            "Content-Disposition": disposition(name),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )


async def original(request: web.Request) -> web.Response:
    """The message as received (.eml), for anyone who may see the message."""
    viewer = require_viewer(request)
    pk = int(request.match_info["pk"])
    data = await store_of(request).read(lambda s: browse.original_bytes(s, viewer, pk))
    if data is None:
        raise web.HTTPNotFound()
    return download(data, f"message-{pk}.eml")


async def attachment(request: web.Request) -> web.Response:
    viewer = require_viewer(request)
    pk, position = int(request.match_info["pk"]), int(request.match_info["position"])
    found = await store_of(request).read(lambda s: browse.attachment_bytes(s, viewer, pk, position))
    if found is None:
        raise web.HTTPNotFound()
    filename, content_type, data = found
    return download(data, safe_filename(filename, f"attachment-{pk}-{position}"), content_type)
