"""Rendered pages kept until what they show changes.

A thread page of fifty messages costs milliseconds of database reads and
template work, and many people read the same threads. A thread page's body
is kept under the thread, a stamp that changes whenever its data does (its
row and the newest delivery of its messages), the exact messages the reader
may see, their language and zone, and the configuration object: readers who
see the same messages share it, and the shell around it (header, forms with
the session's token) is rendered for each request. Listing and search pages
are kept whole per reader and session (their forms carry its token), under
the store's newest delivery. A key is never shared by readers who may see
different things.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bridge.web.frame.context import language, page_context, templates, timezone, viewer
from bridge.web.frame.keys import CSP_IMG, CSRF_TOKEN, PAGE_CACHE, config_of


@dataclass(frozen=True, slots=True)
class Rendered:
    """A whole page, and the extra img-src its answer needs."""

    body: str
    csp_img: str = ""
    title: str = ""

    @property
    def size(self) -> int:
        return len(self.body) + 256


class PageCache:
    """A least-recently-used map bounded by the characters it holds."""

    def __init__(self, max_chars: int = 64 * 1024 * 1024) -> None:
        self.max_chars = max_chars
        self._items: OrderedDict[Hashable, Rendered] = OrderedDict()
        self._chars = 0
        self.hits = 0
        self.misses = 0

    def resize(self, max_chars: int) -> None:
        self.max_chars = max_chars
        while self._chars > self.max_chars and self._items:
            _, dropped = self._items.popitem(last=False)
            self._chars -= dropped.size

    def get(self, key: Hashable) -> Rendered | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: Hashable, value: Rendered) -> None:
        if value.size > self.max_chars // 8:  # also: a cache of size 0 keeps nothing
            return  # one giant page must not empty the cache
        old = self._items.pop(key, None)
        if old is not None:
            self._chars -= old.size
        self._items[key] = value
        self._chars += value.size
        self.resize(self.max_chars)


def reading_key(request: web.Request) -> tuple[Hashable, ...]:
    """What shapes a page body besides its data: language, zone, configuration."""
    return (id(config_of(request)), language(request), timezone(request).key)


def reader_key(request: web.Request) -> tuple[Hashable, ...]:
    """Everything about the reader and their session that shapes a page."""
    who = viewer(request)
    access = (who.address, who.is_staff, tuple(sorted(who.spaces))) if who else None
    return (
        access,
        id(config_of(request)),
        language(request),
        timezone(request).key,
        request.get(CSRF_TOKEN, ""),
        request.path_qs,
    )


def cache_of(request: web.Request) -> PageCache:
    """The app's cache, sized by the current `[web] page_cache_mb`."""
    cache = request.app[PAGE_CACHE]
    wanted = config_of(request).web.page_cache_mb * 1024 * 1024
    if cache.max_chars != wanted:
        cache.resize(wanted)
    return cache


def render_page(request: web.Request, name: str, context: dict[str, Any]) -> Rendered:
    """Template `name` for this reader, ready to keep and to answer with."""
    values = page_context(request)
    values.update(context)
    body = templates.get_template(name).render(values)
    return Rendered(body, request.get(CSP_IMG, ""))


def respond(request: web.Request, rendered: Rendered, status: int = 200) -> web.Response:
    if rendered.csp_img:
        request[CSP_IMG] = rendered.csp_img
    return web.Response(
        text=rendered.body, status=status, content_type="text/html", charset="utf-8"
    )
