"""The reading pages: home, spaces, people and search (threads and downloads are beside).

Handlers are thin: read the request, ask `bridge.store.read.browse` (or the
search engine) through the store runner, render. Everything they show is
already cut to what the reader may see; something hidden answers the same
404 as something missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from datetime import date, datetime, time
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from bridge.core.search_language.query import Hint, parse_query
from bridge.i18n import translator
from bridge.search import search
from bridge.search.engine import SearchResults
from bridge.store.read import browse, marks
from bridge.web.frame.context import (
    feed_url,
    language,
    page_context,
    render,
    require_viewer,
    templates,
    timezone,
)
from bridge.web.frame.keys import config_of, store_of
from bridge.web.frame.page_cache import Rendered, cache_of, reader_key, render_page, respond
from bridge.web.pages import downloads, thread_page

PAGE_SIZE = 30
SEARCH_PAGE_SIZE = 20
MAX_PAGE = 10_000  # deeper pages are refused (400) rather than scanned


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/s/{slug}", space)
    app.router.add_get("/p/{address}", person)
    app.router.add_get("/search", search_page)
    thread_page.add_routes(app)
    downloads.add_routes(app)


def page_number(request: web.Request) -> int:
    """`?page=` (1 when absent); anything but a sensible positive integer is a 400."""
    raw = request.query.get("page", "1").strip() or "1"
    if not raw.isdigit() or len(raw) > 6:
        raise web.HTTPBadRequest(text="page must be a positive whole number")
    number = int(raw)
    if not 1 <= number <= MAX_PAGE:
        raise web.HTTPBadRequest(text="page must be a positive whole number")
    return number


def _day(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a date written YYYY-MM-DD") from None


def _day_start(request: web.Request, day: date | None) -> datetime | None:
    """Midnight of `day` in the reader's zone: filters follow the dates they see."""
    return datetime.combine(day, time.min, tzinfo=timezone(request)) if day else None


def pages(total: int, page: int, size: int) -> dict[str, int]:
    return {"page": page, "pages": max(1, math.ceil(total / size)), "total": total}


async def _stamps(request: web.Request) -> tuple[int, int]:
    """What a kept listing depends on: the whole store, and the reader's own marks."""
    address = require_viewer(request).address
    return await store_of(request).read(
        lambda s: (browse.store_stamp(s), marks.version(s, address))
    )


async def _kept(
    request: web.Request, *key: Hashable
) -> tuple[tuple[Hashable, ...], Rendered | None]:
    """The cache key of a listing page (data: the whole store, and the reader's
    own marks: unread, follow, mute), and its kept page."""
    full = (*key, await _stamps(request), *reader_key(request))
    return full, cache_of(request).get(full)


def _keep(
    request: web.Request,
    key: tuple[Hashable, ...],
    name: str,
    context: dict[str, Any],
) -> web.Response:
    rendered = render_page(request, name, context)
    cache_of(request).put(key, rendered)
    return respond(request, rendered)


async def home(request: web.Request) -> web.Response:
    viewer = require_viewer(request)
    # `?muted=1`: the threads the reader muted (left out of every other list).
    muted = request.query.get("muted", "") in ("1", "on", "yes", "true")
    key, kept = await _kept(request, "home", muted)
    if kept is not None:
        return respond(request, kept)
    rows, total = await store_of(request).read(
        lambda s: browse.thread_summaries(s, viewer, muted=muted, limit=PAGE_SIZE)
    )
    spaces = [sp for sp in config_of(request).spaces if sp.slug in viewer.spaces]
    return _keep(
        request,
        key,
        "home.html",
        {"threads": rows, "total": total, "spaces": spaces, "muted": muted},
    )


async def space(request: web.Request) -> web.Response:
    viewer = require_viewer(request)
    slug = request.match_info["slug"]
    found = next((sp for sp in config_of(request).spaces if sp.slug == slug), None)
    if found is None or slug not in viewer.spaces:
        raise web.HTTPNotFound()
    page = page_number(request)
    sender = request.query.get("from", "").strip()[:320]
    attachment = request.query.get("attachment", "") in ("1", "on", "yes", "true")
    tag = request.query.get("tag", "").strip()[:100]
    after, before = _day(request, "after"), _day(request, "before")
    rows, total = await store_of(request).read(
        lambda s: browse.thread_summaries(
            s,
            viewer,
            space=slug,
            participant=sender or None,
            has_attachment=True if attachment else None,
            after=_day_start(request, after),
            before=_day_start(request, before),
            tag=tag or None,
            muted=False,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
    )
    filters: dict[str, Any] = {
        "from": sender,
        "attachment": attachment,
        "tag": tag,
        "after": after.isoformat() if after else "",
        "before": before.isoformat() if before else "",
    }
    return render(
        request,
        "space.html",
        {
            "space": found,
            "threads": rows,
            "filters": filters,
            "pager": pages(total, page, PAGE_SIZE),
            "pager_query": {k: ("1" if v is True else v) for k, v in filters.items() if v},
            "feed": feed_url(request, f"/feeds/s/{slug}.atom"),
        },
    )


async def person(request: web.Request) -> web.Response:
    viewer = require_viewer(request)
    address = request.match_info["address"].strip().lower()[:320]
    page = page_number(request)

    def read(s: Any) -> tuple[browse.PersonRef | None, list[browse.ThreadSummary], int]:
        found = browse.find_person(s, address)
        # Asked whether known or not: a stranger's 404 takes as long as a hidden person's.
        rows, total = browse.thread_summaries(
            s, viewer, person=address, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
        return found, rows, total

    found, rows, total = await store_of(request).read(read)
    # Someone the reader shares no thread with is not theirs to learn about.
    if found is None or total == 0:
        raise web.HTTPNotFound()
    return render(
        request,
        "person.html",
        {"person": found, "threads": rows, "pager": pages(total, page, PAGE_SIZE)},
    )


async def search_page(request: web.Request) -> web.Response:
    viewer = require_viewer(request)
    text = request.query.get("q", "")[:1000]
    page = page_number(request)
    # Two kept pages: the results (until new mail), and the results with the
    # reader's unread marks (until they read something). Reading a thread
    # then costs the marks of one page of results, not the search again.
    stamp, version = await _stamps(request)
    reader = reader_key(request)
    key = ("search", text, page, stamp, version, *reader)
    results_key = ("search-results", text, page, stamp, *reader)
    marked = cache_of(request).get(key)
    if marked is not None:
        return respond(request, marked)
    kept = cache_of(request).get(results_key)
    if kept is not None:
        marked = await _with_unread(request, kept)
        cache_of(request).put(key, marked)
        return respond(request, marked)
    results = None
    names: dict[str, str] = {}
    states: dict[int, marks.ThreadState] = {}
    if text.strip():

        def find(
            s: Session,
        ) -> tuple[SearchResults, dict[str, str], dict[int, marks.ThreadState]]:
            found = search(
                s, text, limit=SEARCH_PAGE_SIZE, offset=(page - 1) * SEARCH_PAGE_SIZE, viewer=viewer
            )
            # Senders by name, one query for the page; the reader's unread and tags.
            return (
                found,
                browse.display_names(s, [hit.sender for hit in found.hits]),
                marks.thread_states(s, viewer, [hit.thread_id for hit in found.hits]),
            )

        results, names, states = await store_of(request).read(find)
    found = results.hints if results is not None else parse_query(text).hints
    _ = translator(language(request))
    hints = [_(h.template).format(**h.values) if isinstance(h, Hint) else str(h) for h in found]
    total = results.total_threads if results is not None else 0
    context = {
        "query": text,
        "results": results,
        "names": names,
        "states": states,
        "hints": hints,
        "pager": pages(total, page, SEARCH_PAGE_SIZE),
        "pager_query": {"q": text},
    }
    rendered = render_page(request, "search.html", context)
    cache_of(request).put(results_key, rendered)
    marked = await _with_unread(request, rendered, states)
    cache_of(request).put(key, marked)
    return respond(request, marked)


_RESULT = re.compile(r'<li class="result" data-thread="(\d+)">')


async def _with_unread(
    request: web.Request,
    rendered: Rendered,
    states: dict[int, marks.ThreadState] | None = None,
) -> Rendered:
    """A search page with the reader's unread marks as they are now (`states`, else read)."""
    ids = [int(found) for found in _RESULT.findall(rendered.body)]
    if states is None and ids:
        viewer = require_viewer(request)
        states = await store_of(request).read(lambda s: marks.thread_states(s, viewer, ids))
    macros = templates.get_template("_macros.html").make_module(page_context(request))
    body = rendered.body
    for thread_id in ids:
        state = (states or {}).get(thread_id)
        unread = state.unread if state is not None else 0
        tag = f'<li class="result" data-thread="{thread_id}">'
        mark = f"<!--unread {thread_id}-->"
        if unread:
            body = body.replace(tag, f'{tag[:-1]} data-unread="{unread}">')
            body = body.replace(mark, str(macros.unread_mark(thread_id, unread)))  # type: ignore[attr-defined]
        else:
            body = body.replace(mark, "")
    return Rendered(body, rendered.csp_img, rendered.title)
