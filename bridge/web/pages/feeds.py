"""Atom feeds of a space and of a thread, authorised by the reader's feed token.

`/feeds/s/<slug>.atom?token=…` holds the newest messages of a space's
threads and `/feeds/t/<id>.atom?token=…` those of one thread, as far as the
token's owner may see them. Feed readers cannot sign in, so the token (signed,
naming the address and its `feed_epoch`) stands for the reader; bumping the
epoch in their settings revokes every link they handed out. A bad or revoked
token, a space the owner may not read and a hidden thread all answer 404,
like something missing.

Built with ElementTree: it escapes text, and the message's new text is
served as `type="text"` content, so nothing in a message becomes markup.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from bridge.core.access import Viewer, viewer_for
from bridge.store.read import browse
from bridge.store.read.browse import FeedEntry
from bridge.web.account.auth_store import feed_viewer_address, get_user
from bridge.web.frame.keys import config_of, signer_of, store_of

ATOM = "http://www.w3.org/2005/Atom"
ENTRIES = 30
# Characters XML 1.0 does not allow (mail carries form feeds and escape codes).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


async def token_viewer(request: web.Request, token: str) -> Viewer | None:
    """The reader a feed token stands for, or None when it is not ours or was revoked."""
    found = feed_viewer_address(signer_of(request), token)
    if found is None:
        return None
    address, epoch = found
    user = await store_of(request).read(lambda s: get_user(s, address))
    if (user.feed_epoch if user is not None else 0) != epoch:
        return None
    config = config_of(request)
    return viewer_for(address, config.spaces, config.staff_domains)


async def _feed_reader(request: web.Request) -> Viewer:
    token = request.query.get("token", "")
    reader = await token_viewer(request, token) if token else None
    if reader is None:
        raise web.HTTPNotFound()
    return reader


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
    if text is not None:
        element.text = _clean(text)
    return element


def atom(
    *, feed_id: str, title: str, page: str, self_url: str, entries: list[FeedEntry], base: str
) -> bytes:
    """An Atom 1.0 document (RFC 4287) of `entries`, newest first."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    _sub(feed, "id", feed_id)
    _sub(feed, "title", title)
    newest = max((e.sort_date for e in entries), default=datetime(1970, 1, 1, tzinfo=UTC))
    _sub(feed, "updated", _stamp(newest))
    _sub(feed, "link", rel="alternate", type="text/html", href=page)
    _sub(feed, "link", rel="self", type="application/atom+xml", href=self_url)
    author = _sub(feed, "author")
    _sub(author, "name", "Bridge")
    _sub(feed, "generator", "Bridge")
    for entry in entries:
        message = entry.message
        item = _sub(feed, "entry")
        _sub(item, "id", f"{base}/m/{quote(message.message_id, safe='@')}")
        _sub(item, "title", message.subject or entry.thread_subject or "(no subject)")
        _sub(item, "updated", _stamp(entry.sort_date))
        if message.date is not None:
            _sub(item, "published", _stamp(message.date))
        link = f"{base}/t/{entry.thread_id}#m{message.pk}"
        _sub(item, "link", rel="alternate", type="text/html", href=link)
        if message.sender is not None:
            who = _sub(item, "author")
            _sub(who, "name", message.sender.name or message.sender.address)
            _sub(who, "email", message.sender.address)
        _sub(item, "content", message.new_text, type="text")
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


def _response(body: bytes) -> web.Response:
    return web.Response(
        body=body,
        content_type="application/atom+xml",
        charset="utf-8",
        headers={"Cache-Control": "private, no-cache"},
    )


async def space_feed(request: web.Request) -> web.Response:
    reader = await _feed_reader(request)
    slug = request.match_info["slug"]
    config = config_of(request)
    space = next((s for s in config.spaces if s.slug == slug), None)
    if space is None or slug not in reader.spaces:
        raise web.HTTPNotFound()
    entries = await store_of(request).read(
        lambda s: browse.newest_messages(s, reader, space=slug, limit=ENTRIES)
    )
    base = config.web.public_url
    body = atom(
        feed_id=f"{base}/s/{quote(slug)}",
        title=space.name or slug,
        page=f"{base}/s/{quote(slug)}",
        self_url=f"{base}/feeds/s/{quote(slug)}.atom",
        entries=entries,
        base=base,
    )
    return _response(body)


async def thread_feed(request: web.Request) -> web.Response:
    reader = await _feed_reader(request)
    try:
        number = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None

    def read(session: Any) -> tuple[int, list[FeedEntry]] | None:
        current = browse.resolve_thread_id(session, number)
        if current is None:
            return None
        found = browse.newest_messages(session, reader, thread_id=current, limit=ENTRIES)
        return (current, found) if found else None

    found = await store_of(request).read(read)
    if found is None:
        raise web.HTTPNotFound()
    current, entries = found
    base = config_of(request).web.public_url
    body = atom(
        feed_id=f"{base}/t/{current}",
        title=entries[-1].thread_subject or entries[-1].message.subject,
        page=f"{base}/t/{current}",
        self_url=f"{base}/feeds/t/{current}.atom",
        entries=entries,
        base=base,
    )
    return _response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/feeds/s/{slug}.atom", space_feed)
    app.router.add_get("/feeds/t/{id}.atom", thread_feed)
