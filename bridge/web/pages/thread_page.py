"""The thread page and message permalinks.

`/t/<id>` shows the reply tree (or `?view=flat`, by date); a merged
thread's old id redirects for good to the thread it joined. Message HTML
is prepared for the page by `bridge.core.body.html.page_html`: remote images
stay deferred unless the reader asked (`?images=1`), and then the page's
CSP admits exactly their origins, for that answer only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from markupsafe import Markup
from sqlalchemy.orm import Session

from bridge.core.access import Viewer
from bridge.core.body.disclaimers import split_notice
from bridge.core.body.html import (
    has_data_table,
    has_remote_images,
    page_html,
    remote_image_origins,
)
from bridge.core.message import Flag
from bridge.i18n import translator
from bridge.store.read import browse, marks
from bridge.store.visibility.access import visible_message_ids
from bridge.web.frame.context import (
    feed_url,
    language,
    page_context,
    render,
    require_viewer,
    templates,
)
from bridge.web.frame.keys import CSP_IMG, now_of, store_of
from bridge.web.frame.page_cache import Rendered, cache_of, reading_key


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/t/{thread_id:\d{1,12}}", thread)
    app.router.add_get("/m/{message_id:.+}", message_link)


@dataclass(frozen=True, slots=True)
class Shown:
    """A message as the page shows it: its stored fields and its HTML made ready.

    `text` and `signature` are the stored ones without the legal notice that
    closed them (`bridge.core.body.disclaimers`); `notice` is that notice, folded
    on the page like quoted history.
    """

    message: browse.MessageDetail
    html: Markup | None
    remote_images: bool
    text: str = ""
    signature: str = ""
    notice: str = ""
    # HTML-only mail whose text (made from the HTML) flattened a table of data:
    # the formatted message is shown first, the text on request.
    formatted_first: bool = False


def _shown(m: browse.MessageDetail, html: Markup | None, waiting: bool) -> Shown:
    body = split_notice(m.new_text)
    signature = split_notice(m.signature)
    notice = "\n\n".join(n for n in (body.notice, signature.notice) if n)
    first = (
        html is not None
        and m.html is not None
        and Flag.HTML_ONLY in m.flags
        and has_data_table(m.html, m.new_text)
    )
    return Shown(m, html, waiting, body.text, signature.text, notice, first)


def _prepare(
    detail: browse.ThreadDetail, remote: bool
) -> tuple[list[browse.MessageDetail], dict[int, Shown], set[str]]:
    shown: dict[int, Shown] = {}
    origins: set[str] = set()
    for m in detail.messages:
        if m.html is None:
            shown[m.pk] = _shown(m, None, False)
            continue
        inline = {a.content_id: f"/a/{m.pk}/{a.position}" for a in m.attachments if a.content_id}
        waiting = has_remote_images(m.html)
        html = page_html(m.html, inline, remote_images=remote)
        if remote:
            origins.update(remote_image_origins(m.html))
        # page_html's output is sanitised HTML (nh3 allow-list): it is markup, not text.
        shown[m.pk] = _shown(m, Markup(html), waiting)
    return list(detail.messages), shown, origins


Found = tuple[int, tuple[Any, ...] | None, tuple[int, ...], str, "marks.ThreadState | None"]


def _resolve_and_stamp(session: Session, asked: int, viewer: Viewer) -> Found | None:
    """The thread's current id; when it is the one asked, its stamp, what the viewer sees,
    the reader's address when the page shows them a Bcc (then it is theirs alone), and
    their marks on it (what they have not read yet), in one read."""
    current = browse.resolve_thread_id(session, asked)
    # A missing thread costs the same queries as a hidden one: its 404 must not
    # answer sooner. A merged thread's old id leads on only to a reader who sees some.
    seen = visible_message_ids(
        session, viewer, browse.in_range(asked) if current is None else current
    )
    if current is None or not seen:
        return None
    if current != asked:
        return current, None, (), "", None
    own = viewer.address if browse.knows_bcc(session, viewer, list(seen)) else ""
    state = marks.thread_state_of(session, viewer, current, seen)
    return current, browse.thread_stamp(session, current), seen, own, state


async def thread(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    asked = int(request.match_info["thread_id"])
    found = await store_of(request).read(lambda s: _resolve_and_stamp(s, asked, viewer))
    if found is None:
        raise web.HTTPNotFound()
    # `state`: what this reader has not read yet (of the messages they may see),
    # before this visit marks it read: the body's `#unread` anchor depends on it.
    current, stamp, seen, own, state = found
    if current != asked:
        # Permanent: links to a merged thread must keep working, and bookmarks update.
        query = f"?{request.query_string}" if request.query_string else ""
        raise web.HTTPPermanentRedirect(f"/t/{current}{query}")
    if not seen:
        raise web.HTTPNotFound()
    flat = request.query.get("view") == "flat"
    remote = request.query.get("images") == "1"
    unread = state.unread_pks if state is not None else ()
    # Readers who see the same messages of the same thread, with the same
    # unread ones, share its body.
    key = ("thread", current, stamp, seen, own, unread, flat, remote, *reading_key(request))
    kept = cache_of(request).get(key)
    if kept is None:
        detail = await store_of(request).read(lambda s: browse.thread_detail(s, viewer, current))
        if detail is None:
            raise web.HTTPNotFound()
        kept = _render_body(request, detail, flat, remote, frozenset(unread))
        cache_of(request).put(key, kept)
    if state is not None and state.newest > state.read_upto:
        # Read up to the newest message they may see as this page shows it: one
        # that arrives meanwhile stays unread.
        now = now_of(request)
        await store_of(request).write(
            lambda s: marks.mark_read(s, viewer.address, current, state.newest, now)
        )
    if kept.csp_img:
        request[CSP_IMG] = kept.csp_img
    feed = feed_url(request, f"/feeds/t/{current}.atom")
    context = {
        "title": kept.title,
        "body": Markup(kept.body),
        "feed": feed,
        "thread_id": current,
        "watch": state.watch if state is not None else "",
    }
    return render(request, "thread.html", context)


def _render_body(
    request: web.Request,
    detail: browse.ThreadDetail,
    flat: bool,
    remote: bool,
    unread: frozenset[int] = frozenset(),
) -> Rendered:
    messages, shown, origins = _prepare(detail, remote)
    if flat:
        messages = detail.by_date()
    # The first unread message in the order shown carries `#unread`.
    first_unread = next((m.pk for m in messages if m.pk in unread), None)
    values = page_context(request)
    values.update(
        {
            "thread": detail,
            "messages": messages,
            "shown": shown,
            "flat": flat,
            "remote": remote,
            "any_remote": any(s.remote_images for s in shown.values()),
            "first_unread": first_unread,
            "tags": sorted({t for m in detail.messages for t in m.tags}),
        }
    )
    body = templates.get_template("_thread_body.html").render(values)
    title = detail.subject or translator(language(request))("(no subject)")
    csp_img = " ".join(sorted(origins)) if remote and origins else ""
    return Rendered(body, csp_img, title)


async def message_link(request: web.Request) -> web.StreamResponse:
    """`/m/<message-id>` (with or without <>, percent-encoded or not) → its place in its thread."""
    viewer = require_viewer(request)
    wanted = request.match_info["message_id"]
    if "%" in wanted:
        wanted = unquote(wanted)
    if not wanted.strip() or len(wanted) > 998:
        raise web.HTTPNotFound()
    found = await store_of(request).read(lambda s: browse.locate_message(s, viewer, wanted))
    if found is None:
        raise web.HTTPNotFound()
    thread_id, pk = found
    raise web.HTTPSeeOther(f"/t/{thread_id}#m{pk}")
