"""Writing from the viewer: replies, and new discussions; pages that work without JavaScript.

`GET /t/<thread>/reply?message=<pk>&mode=all|sender` shows the message
answered, the people the reply goes to, a text box and a file field;
`POST /t/<thread>/reply` sends it (`bridge.outbound.replies`) and leads
back to the thread, where the reply is shown at once. A message the reader
may not see answers 404, exactly as one that does not exist.

`GET /new?space=<slug>` writes to a space's list address, `GET /new` to
chosen people (colleagues, or people of the reader's own discussions,
offered as they type by a `<datalist>`); `POST /new` sends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from bridge.core.access import Viewer
from bridge.core.admin_rules.rules import Space
from bridge.core.outgoing.reply import ReplyMode, reply_subject
from bridge.outbound.compose import Attachment
from bridge.outbound.replies import (
    Parent,
    ReplyRefused,
    load_parent,
    recipients,
    send_reply,
    start_discussion,
)
from bridge.store.read import browse
from bridge.store.read.correspondents import correspondents
from bridge.web.frame.context import language, render, require_viewer, timezone
from bridge.web.frame.keys import config_of, now_of, send_now, store_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The reply form's fields besides its files, and their room in a request.
FORM_OVERHEAD = 64 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_get(r"/t/{thread_id:\d{1,12}}/reply", reply_form)
    app.router.add_post(r"/t/{thread_id:\d{1,12}}/reply", post_reply)
    app.router.add_get("/new", new_form)
    app.router.add_post("/new", post_new)


@web.middleware
async def uploads(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let the reply form's request carry its files; every other request keeps the small limit.

    First in the chain, so the form token check reads the form under this limit.
    """
    if request.method == "POST" and request.match_info.handler in (post_reply, post_new):
        limits = config_of(request).web
        # Percent-encoded, a text's UTF-8 bytes take up to 3 times their size.
        size = 3 * limits.max_reply_bytes + limits.max_upload_bytes + FORM_OVERHEAD
        request = request.clone(client_max_size=size)
        try:
            return await handler(request)
        finally:
            await _close_files(request)
    return await handler(request)


async def _close_files(request: web.Request) -> None:
    """Close the form's spooled files (big ones sit in temporary files) whatever the answer."""
    try:
        form = await request.post()  # the form as read before (aiohttp keeps it)
    except Exception:  # never read: refused for its size, or the client went away
        return
    for value in form.values():
        if isinstance(value, FileField):
            value.file.close()


def _mode(value: object) -> ReplyMode:
    return "sender" if value == "sender" else "all"


def _pk(value: object) -> int:
    try:
        pk = int(str(value))
    except ValueError:
        raise web.HTTPNotFound() from None
    if not 0 < pk <= browse.MAX_ID:
        raise web.HTTPNotFound()
    return pk


async def _parent(request: web.Request, viewer: Viewer, pk: int) -> Parent:
    asked = int(request.match_info["thread_id"])

    def read(session: Any) -> Parent | None:
        # The URL's thread must be the message's (or an old id of a merged thread).
        parent = load_parent(session, viewer, pk)
        if parent is None or browse.resolve_thread_id(session, asked) != parent.thread_id:
            return None
        return parent

    found = await store_of(request).read(read)
    if found is None:
        raise web.HTTPNotFound()
    return found


async def reply_form(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    parent = await _parent(request, viewer, _pk(request.query.get("message", "")))
    mode = _mode(request.query.get("mode"))
    return _form(request, viewer, parent, mode, text="", error="")


def _form(
    request: web.Request,
    viewer: Viewer,
    parent: Parent,
    mode: ReplyMode,
    *,
    text: str,
    error: str,
    status: int = 200,
) -> web.Response:
    config = config_of(request)
    chosen = recipients(config, parent, viewer.address, mode)
    context = {
        "parent": parent,
        "mode": mode,
        "to": chosen.to,
        "cc": chosen.cc,
        "subject": reply_subject(parent.subject),
        "text": text,
        "error": error,
        "max_upload": config.web.max_upload_bytes,
        "action": f"/t/{parent.thread_id}/reply",
    }
    page = render(request, "reply.html", context, status=status)
    page.headers["Cache-Control"] = "private, no-store"
    return page


async def post_reply(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    form = await request.post()  # read under the raised size limit (app.uploads)
    pk = _pk(form.get("message", ""))
    mode = _mode(form.get("mode"))
    text = form.get("body", "")
    text = text if isinstance(text, str) else ""
    files = _files(form)
    config = config_of(request)
    now = now_of(request)
    lang, tz = language(request), timezone(request)
    asked = int(request.match_info["thread_id"])

    def write(session: Any) -> Any:
        # The parent is read (and the URL's thread checked) in the write
        # itself: a reply does not also wait for a reader thread, which
        # search pages may all be holding.
        return send_reply(
            session,
            config,
            viewer,
            parent_pk=pk,
            text=text,
            mode=mode,
            attachments=files,
            language=lang,
            tz=tz,
            now=now,
            in_thread=asked,
        )

    try:
        sent = await store_of(request).write(write)
    except ReplyRefused as refused:
        if refused.status == 404:
            raise web.HTTPNotFound() from None
        parent = await _parent(request, viewer, pk)  # the form again, with the reason
        return _form(
            request, viewer, parent, mode, text=text, error=refused.reason, status=refused.status
        )
    send_now(request)
    raise web.HTTPSeeOther(f"/t/{sent.thread_id}#m{sent.pk}")


def _files(form: Any) -> list[Attachment]:
    return [
        Attachment(
            field.filename or "attachment",
            field.content_type or "application/octet-stream",
            field.file.read(),
        )
        for field in form.getall("files", [])
        if isinstance(field, FileField) and field.filename
    ]


def _text(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def new_form(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    space = _space(request, viewer, request.query.get("space", ""))
    asked = request.query.get("to", "")
    return await _new_page(request, viewer, space, to=asked, subject="", text="", error="")


def _space(request: web.Request, viewer: Viewer, slug: str) -> Space | None:
    """The space written to (None: to people); 404 for one the reader may not read."""
    if not slug:
        return None
    found = next((s for s in config_of(request).spaces if s.slug == slug), None)
    if found is None or slug not in viewer.spaces or not found.address:
        raise web.HTTPNotFound()
    return found


async def _new_page(
    request: web.Request,
    viewer: Viewer,
    space: Space | None,
    *,
    to: str,
    subject: str,
    text: str,
    error: str,
    detail: str = "",
    status: int = 200,
) -> web.Response:
    offered: list[str] = []
    if space is None:
        offered = await store_of(request).read(lambda s: correspondents(s, viewer))
    context = {
        "space": space,
        "to": to,
        "offered": offered,
        "subject": subject,
        "text": text,
        "error": error,
        "detail": detail,
    }
    page = render(request, "new.html", context, status=status)
    page.headers["Cache-Control"] = "private, no-store"
    return page


async def post_new(request: web.Request) -> web.StreamResponse:
    viewer = require_viewer(request)
    form = await request.post()  # read under the raised size limit (uploads)
    space = _space(request, viewer, _text(form, "space"))
    to, subject, text = _text(form, "to"), _text(form, "subject"), _text(form, "body")
    files = _files(form)
    config, now = config_of(request), now_of(request)
    addresses = [a for a in to.replace(";", ",").replace("\n", ",").split(",") if a.strip()]

    def write(session: Any) -> Any:
        return start_discussion(
            session,
            config,
            viewer,
            space=space.slug if space is not None else "",
            to=addresses,
            subject=subject,
            text=text,
            attachments=files,
            now=now,
        )

    try:
        sent = await store_of(request).write(write)
    except ReplyRefused as refused:
        if refused.status == 404:
            raise web.HTTPNotFound() from None
        return await _new_page(
            request,
            viewer,
            space,
            to=to,
            subject=subject,
            text=text,
            error=refused.reason,
            detail=refused.detail,
            status=refused.status,
        )
    send_now(request)
    raise web.HTTPSeeOther(f"/t/{sent.thread_id}#m{sent.pk}")
