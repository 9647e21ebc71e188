"""The JSON API under `/api/v1/`: threads, messages, search, spaces; replies and read marks.

Reads change nothing; the writes are replies and the reader's own marks
(follow, mute, read).

Described by `bridge.web.json_api.openapi` (served at `/api/v1/openapi.json`). A
request is the reader's through the session cookie or, for scripts that
read, through `Authorization: Bearer <feed token>` (the token of their feed
links, revoked with them). Writing (`POST /api/v1/messages`, a reply) takes
the session cookie and its form token in `X-CSRF-Token`: a feed token sits
in feed readers and URLs, so it only ever reads. Every answer applies the
access rule through `bridge.store.read.browse`: hidden and missing things both
answer 404 with the same body. Dates are
ISO 8601 in UTC.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from bridge.core.access import Viewer
from bridge.outbound.replies import ReplyRefused, send_reply
from bridge.search.engine import SearchHit, search
from bridge.store.read import browse, marks
from bridge.store.read.browse import MessageDetail, PersonRef, ThreadDetail, ThreadSummary
from bridge.web.frame.context import language, timezone, viewer
from bridge.web.frame.keys import config_of, now_of, send_now, store_of
from bridge.web.json_api.openapi import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_QUERY_CHARS,
    MAX_SEARCH_PAGE,
    SEARCH_PAGE_SIZE,
    openapi_document,
)
from bridge.web.pages.feeds import token_viewer
from bridge.web.pages.marks import set_watch

PREFIX = "/api/v1"
TRUE, FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


# --- who is asking -------------------------------------------------------------


def _unauthorized(message: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=json.dumps({"error": "unauthorized", "message": message}),
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="bridge"'},
    )


async def api_viewer(request: web.Request) -> Viewer:
    """The reader: signed in by cookie, else named by a bearer feed token; else 401."""
    found = viewer(request)
    if found is not None:
        return found
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        by_token = await token_viewer(request, token.strip())
        if by_token is not None:
            return by_token
        raise _unauthorized("the bearer token is not valid (revoked, or not ours)")
    raise _unauthorized("sign in, or send Authorization: Bearer <your feed token>")


def api_writer(request: web.Request) -> Viewer:
    """The reader of a write: signed in by cookie (the form token was checked); else 401.

    A request naming any Authorization is refused (403): a feed token sits
    in feed readers and URLs, so it only ever reads.
    """
    if request.headers.get("Authorization", "").strip():
        body = json.dumps({"error": "forbidden", "message": "a feed token only reads"})
        raise web.HTTPForbidden(text=body, content_type="application/json")
    found = viewer(request)
    if found is None:
        raise _unauthorized("sign in to write")
    return found


# --- parameters ----------------------------------------------------------------


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    # No stored text holds NUL, and PostgreSQL refuses it in parameters.
    return None if value is None else value.replace("\x00", " ")


def _integer(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _text(request, name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise _bad(f"{name} must be an integer, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}")
    return value


def _boolean(request: web.Request, name: str) -> bool | None:
    raw = _text(request, name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise _bad(f"{name} must be true or false")


# RFC 3339 (what the document promises) and the ISO 8601 forms people type.
_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?([Zz]|[+-]\d{2}:?\d{2})?)?"
)


def _instant(request: web.Request, name: str) -> datetime | None:
    """A day (midnight UTC) or a date-time (UTC when it names no zone)."""
    raw = _text(request, name)
    if raw is None:
        return None
    found = _INSTANT.fullmatch(raw.strip())
    if found is None:
        raise _bad(f"{name} must be a day (YYYY-MM-DD) or an ISO 8601 date-time")
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    try:
        value = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            min(int(second or 0), 59),  # a leap second counts as :59
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:
        raise _bad(f"{name} is not a real date or time") from None
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        try:
            value -= sign * offset
        except OverflowError:  # the first or last day datetime knows
            value = (
                datetime.min.replace(tzinfo=UTC) if sign > 0 else datetime.max.replace(tzinfo=UTC)
            )
    return value


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- shapes ---------------------------------------------------------------------


def _person(ref: PersonRef | None) -> dict[str, str]:
    return {"address": ref.address, "name": ref.name} if ref else {"address": "", "name": ""}


def thread_json(summary: ThreadSummary) -> dict[str, Any]:
    return {
        "id": summary.id,
        "subject": summary.subject,
        "space": summary.space,
        "private": summary.private,
        "first_date": _iso(summary.first_date),
        "last_date": _iso(summary.last_date),
        "message_count": summary.message_count,
        "participants": [_person(p) for p in summary.participants],
        "more_participants": summary.more_participants,
        "has_attachment": summary.has_attachment,
        "unread": summary.unread,
        "tags": list(summary.tags),
        "watch": summary.watch or "none",
        "url": f"/t/{summary.id}",
    }


def message_json(message: MessageDetail, thread_id: int, ids: dict[int, str]) -> dict[str, Any]:
    """One message; `ids` maps the thread's visible pks to Message-IDs (for the parent)."""
    return {
        "id": message.pk,
        "message_id": message.message_id,
        "thread_id": thread_id,
        "parent_id": message.parent_pk,
        "parent_message_id": ids.get(message.parent_pk) if message.parent_pk else None,
        "depth": message.depth,
        "date": _iso(message.date),
        "sender": _person(message.sender),
        "to": [_person(p) for p in message.to],
        "cc": [_person(p) for p in message.cc],
        "bcc": [_person(p) for p in message.bcc],
        "subject": message.subject,
        "new_text": message.new_text,
        "quoted_text": message.quoted_text,
        "signature": message.signature,
        "html": message.html,
        "attachments": [
            {
                "position": a.position,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "inline": a.inline,
                "url": f"/a/{message.pk}/{a.position}",
            }
            for a in message.attachments
        ],
        "tags": list(message.tags),
        "links": {
            "html": f"/t/{thread_id}#m{message.pk}",
            "permalink": "/m/" + quote(message.message_id, safe="@"),
            "raw": f"/raw/{message.pk}",
        },
    }


def detail_json(detail: ThreadDetail) -> dict[str, Any]:
    ids = {m.pk: m.message_id for m in detail.messages}
    senders: dict[str, PersonRef] = {}
    for m in detail.messages:
        if m.sender is not None:
            senders.setdefault(m.sender.address, m.sender)
    return {
        "id": detail.id,
        "subject": detail.subject,
        "space": detail.space,
        "private": detail.private,
        "first_date": _iso(detail.first_date),
        "last_date": _iso(detail.last_date),
        "message_count": len(detail.messages),
        "participants": [_person(p) for p in detail.participants],
        "more_participants": 0,
        "has_attachment": any(m.attachments for m in detail.messages),
        "url": f"/t/{detail.id}",
        "messages": [message_json(m, detail.id, ids) for m in detail.messages],
    }


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {
        "thread_id": hit.thread_id,
        "subject": hit.subject,
        "message_id": hit.message_id,
        "date": _iso(hit.date),
        "sender": hit.sender,
        "snippet": hit.snippet,
        "matches": hit.matches,
        "url": f"/t/{hit.thread_id}",
    }


# --- handlers --------------------------------------------------------------------


async def list_threads(request: web.Request) -> web.Response:
    reader = await api_viewer(request)
    limit = _integer(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(request, "offset", 0, 0, MAX_OFFSET)
    filters: dict[str, Any] = {
        "space": _text(request, "space"),
        "person": _text(request, "participant"),
        "has_attachment": _boolean(request, "has_attachment"),
        "after": _instant(request, "after"),
        "before": _instant(request, "before"),
        "tag": _text(request, "tag"),
        # Muted threads are left out, as in the viewer's lists; muted=true: only them.
        "muted": bool(_boolean(request, "muted")),
    }
    rows, total = await store_of(request).read(
        lambda s: browse.thread_summaries(s, reader, limit=limit, offset=offset, **filters)
    )
    following = None
    if offset + len(rows) < total:
        query = {k: v for k, v in request.query.items() if k != "offset"}
        query.update(limit=str(limit), offset=str(offset + limit))
        following = f"{PREFIX}/threads?{urlencode(query)}"
    body = {
        "threads": [thread_json(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next": following,
    }
    return web.json_response(body)


def _thread_number(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    if not 0 < value <= 2**63 - 1:
        raise web.HTTPNotFound()
    return value


async def get_thread(request: web.Request) -> web.Response:
    reader = await api_viewer(request)
    number = _thread_number(request)

    def read(session: Any) -> ThreadDetail | None:
        current = browse.resolve_thread_id(session, number)
        # Missing or hidden, the same queries run: the 404 does not tell them apart.
        asked = browse.in_range(number) if current is None else current
        detail = browse.thread_detail(session, reader, asked)
        return None if current is None else detail

    detail = await store_of(request).read(read)
    if detail is None:
        raise web.HTTPNotFound()
    return web.json_response(detail_json(detail))


async def get_message(request: web.Request) -> web.Response:
    reader = await api_viewer(request)
    wanted = request.match_info["message_id"]
    if "\x00" in wanted or len(wanted) > 998:
        raise web.HTTPNotFound()

    def read(session: Any) -> dict[str, Any] | None:
        found = browse.locate_message(session, reader, wanted)
        if found is None:
            return None
        thread_id, pk = found
        detail = browse.thread_detail(session, reader, thread_id)
        if detail is None:
            return None
        ids = {m.pk: m.message_id for m in detail.messages}
        for message in detail.messages:
            if message.pk == pk:
                return message_json(message, thread_id, ids)
        return None

    body = await store_of(request).read(read)
    if body is None:
        raise web.HTTPNotFound()
    return web.json_response(body)


async def search_threads(request: web.Request) -> web.Response:
    reader = await api_viewer(request)
    query = _text(request, "q")
    if query is None:
        raise _bad("q is required: the search text")
    if len(query) > MAX_QUERY_CHARS:
        raise _bad(f"q must be at most {MAX_QUERY_CHARS} characters")
    page = _integer(request, "page", 1, 1, MAX_SEARCH_PAGE)
    found = await store_of(request).read(
        lambda s: search(
            s, query, limit=SEARCH_PAGE_SIZE, offset=(page - 1) * SEARCH_PAGE_SIZE, viewer=reader
        )
    )
    body = {
        "query": query,
        "page": page,
        "per_page": SEARCH_PAGE_SIZE,
        "total_threads": found.total_threads,
        "more": found.more,
        "hints": list(found.hints),
        "results": [hit_json(h) for h in found.hits],
    }
    return web.json_response(body)


async def list_spaces(request: web.Request) -> web.Response:
    reader = await api_viewer(request)
    spaces = [
        {
            "slug": space.slug,
            "name": space.name or space.slug,
            "visibility": space.visibility,
            "url": f"/s/{space.slug}",
        }
        for space in config_of(request).spaces
        if space.slug in reader.spaces
    ]
    return web.json_response({"spaces": spaces})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


async def watch_thread(request: web.Request) -> web.Response:
    """Follow, mute or neither: `{"watch": "follow" | "mute" | "none"}`."""
    reader = api_writer(request)
    number = _thread_number(request)
    body = await _json_body(request)
    choice = body.get("watch")
    if choice not in ("follow", "mute", "none"):
        raise _bad('watch must be "follow", "mute" or "none"')
    stored = "" if choice == "none" else str(choice)
    now = now_of(request)
    done = await store_of(request).write(
        lambda s: set_watch(s, reader, browse.in_range(number), stored, now)
    )
    if done is None:
        raise web.HTTPNotFound()
    return web.json_response({"thread_id": done, "watch": choice})


async def read_thread(request: web.Request) -> web.Response:
    """Mark the thread read up to the newest message the reader may see."""
    reader = api_writer(request)
    number = _thread_number(request)
    now = now_of(request)

    def write(session: Any) -> int | None:
        current = browse.resolve_thread_id(session, browse.in_range(number))
        asked = browse.in_range(number) if current is None else current
        state = marks.thread_states(session, reader, [asked]).get(asked)
        if current is None or state is None:
            return None
        marks.mark_read(session, reader.address, current, state.newest, now)
        return current

    done = await store_of(request).write(write)
    if done is None:
        raise web.HTTPNotFound()
    return web.json_response({"thread_id": done, "unread": 0})


async def read_everything(request: web.Request) -> web.Response:
    """Mark every thread read (what the reader may see now)."""
    reader = api_writer(request)
    now = now_of(request)
    await store_of(request).write(lambda s: marks.mark_all_read(s, reader, now))
    return web.json_response({"read": True})


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(config_of(request).web.public_url))


async def post_message(request: web.Request) -> web.Response:
    """A reply: JSON `{"in_reply_to", "body", "mode"}` → 201 `{"message_id", "thread_id"}`."""
    reader = api_writer(request)
    if request.content_type != "application/json":
        raise _bad("send the reply as application/json")
    try:
        asked = await request.json()
    except ValueError:
        raise _bad("the body is not JSON") from None
    if not isinstance(asked, dict):
        raise _bad("the body must be a JSON object")
    wanted, text, mode = asked.get("in_reply_to"), asked.get("body"), asked.get("mode", "all")
    if not isinstance(wanted, str) or not wanted.strip():
        raise _bad("in_reply_to is required: the Message-ID of the message answered")
    if not isinstance(text, str):
        raise _bad("body is required: the text of the reply")
    if mode not in ("all", "sender"):
        raise _bad("mode must be all or sender")
    config, now = config_of(request), now_of(request)
    lang, tz = language(request), timezone(request)

    def write(session: Any) -> Any:
        # No message has a NUL in its id, or one longer than a header line.
        ok = len(wanted) <= 998 and "\x00" not in wanted
        found = browse.locate_message(session, reader, wanted) if ok else None
        if found is None:
            raise ReplyRefused("No such message.", 404)
        return send_reply(
            session,
            config,
            reader,
            parent_pk=found[1],
            text=text,
            mode=mode,
            language=lang,
            tz=tz,
            now=now,
        )

    try:
        sent = await store_of(request).write(write)
    except ReplyRefused as refused:
        if refused.status == 404:  # hidden and missing answer alike
            raise web.HTTPNotFound() from None
        refusal = {"error": "refused", "message": str(refused)}
        return web.json_response(refusal, status=refused.status)
    send_now(request)
    message_id = sent.message_id.strip("<>")
    location = f"{PREFIX}/messages/{quote(message_id, safe='@')}"
    answer = {"message_id": message_id, "thread_id": sent.thread_id}
    return web.json_response(answer, status=201, headers={"Location": location})


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/openapi.json", openapi_json)
    app.router.add_get(f"{PREFIX}/threads", list_threads)
    app.router.add_get(f"{PREFIX}/threads/{{id}}", get_thread)
    app.router.add_get(f"{PREFIX}/messages/{{message_id:.+}}", get_message)
    app.router.add_post(f"{PREFIX}/messages", post_message)
    app.router.add_get(f"{PREFIX}/search", search_threads)
    app.router.add_get(f"{PREFIX}/spaces", list_spaces)
    app.router.add_post(f"{PREFIX}/threads/{{id}}/watch", watch_thread)
    app.router.add_post(f"{PREFIX}/threads/{{id}}/read", read_thread)
    app.router.add_post(f"{PREFIX}/read", read_everything)
