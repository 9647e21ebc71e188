"""The OpenAPI 3.1 document of the JSON API, served at `/api/v1/openapi.json`.

Written by hand as data: the aiohttp generators (aiohttp-apispec, aiohttp-swagger)
are unmaintained and would tie the handlers to marshmallow schemas for a
handful of routes. Schemathesis checks the handlers against this document.
"""

from __future__ import annotations

from typing import Any

# Shared with the handlers (bridge.web.json_api.handlers), which enforce them.
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_QUERY_CHARS = 500
MAX_SEARCH_PAGE = 1000
SEARCH_PAGE_SIZE = 20
MAX_OFFSET = 2**31 - 1


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NULLABLE_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}
_DAY_OR_TIME = {
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
    ],
    "description": "A day (midnight UTC) or an RFC 3339 date-time; no zone means UTC.",
    "examples": ["2001-11-20", "2001-11-20T18:33:26Z"],
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "examples": ["not_found"]},
            "message": {"type": "string"},
        },
    },
    "Person": {
        "type": "object",
        "required": ["address", "name"],
        "properties": {"address": {"type": "string"}, "name": {"type": "string"}},
    },
    "ThreadSummary": {
        "type": "object",
        "required": [
            "id",
            "subject",
            "space",
            "private",
            "first_date",
            "last_date",
            "message_count",
            "participants",
            "more_participants",
            "has_attachment",
            "url",
        ],
        "properties": {
            "id": {"type": "integer"},
            "unread": {
                "type": "integer",
                "minimum": 0,
                "description": "In lists: messages the reader may see, did not write, and "
                "that arrived since they last opened the thread (or marked all read).",
            },
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "description": "In lists: the rule tags of the messages the reader may see.",
            },
            "watch": {
                "enum": ["follow", "mute", "none"],
                "description": "In lists: whether the reader follows or muted the thread.",
            },
            "subject": {"type": "string"},
            "space": {"type": ["string", "null"]},
            "private": {
                "type": "boolean",
                "description": "Seen by its participants only (each sees their own messages).",
            },
            "first_date": _NULLABLE_DATE_TIME,
            "last_date": _NULLABLE_DATE_TIME,
            "message_count": {
                "type": "integer",
                "minimum": 0,
                "description": "Messages of the thread the reader may see.",
            },
            "participants": {
                "type": "array",
                "items": _ref("Person"),
                "description": "Senders in a list; senders, To and Cc in a thread's detail.",
            },
            "more_participants": {"type": "integer", "minimum": 0},
            "has_attachment": {"type": "boolean"},
            "url": {"type": "string", "description": "The thread page."},
        },
    },
    "Attachment": {
        "type": "object",
        "required": ["position", "filename", "content_type", "size", "inline", "url"],
        "properties": {
            "position": {"type": "integer"},
            "filename": {"type": "string"},
            "content_type": {"type": "string"},
            "size": {"type": "integer", "minimum": 0},
            "inline": {"type": "boolean"},
            "url": {"type": "string", "description": "Download (as an attachment)."},
        },
    },
    "Message": {
        "type": "object",
        "required": [
            "id",
            "message_id",
            "thread_id",
            "parent_id",
            "parent_message_id",
            "depth",
            "date",
            "sender",
            "to",
            "cc",
            "bcc",
            "subject",
            "new_text",
            "quoted_text",
            "signature",
            "html",
            "attachments",
            "tags",
            "links",
        ],
        "properties": {
            "id": {"type": "integer", "description": "The message's number (permalinks)."},
            "message_id": {"type": "string"},
            "thread_id": {"type": "integer"},
            "parent_id": {
                "type": ["integer", "null"],
                "description": "The nearest ancestor the reader may see.",
            },
            "parent_message_id": {"type": ["string", "null"]},
            "depth": {"type": "integer", "minimum": 0, "description": "In the reply tree."},
            "date": _NULLABLE_DATE_TIME,
            "sender": _ref("Person"),
            "to": {"type": "array", "items": _ref("Person")},
            "cc": {"type": "array", "items": _ref("Person")},
            "bcc": {
                "type": "array",
                "items": _ref("Person"),
                "description": "Bcc as the reader may know it: all of it for its sender, "
                "the reader alone for a Bcc recipient, empty for everyone else.",
            },
            "subject": {"type": "string"},
            "new_text": {"type": "string"},
            "quoted_text": {"type": "string"},
            "signature": {"type": "string"},
            "html": {
                "type": ["string", "null"],
                "description": "The HTML part, sanitised; remote images are not loaded.",
            },
            "attachments": {"type": "array", "items": _ref("Attachment")},
            "tags": {"type": "array", "items": {"type": "string"}},
            "links": {
                "type": "object",
                "required": ["html", "permalink", "raw"],
                "properties": {
                    "html": {"type": "string", "description": "The message in its thread."},
                    "permalink": {"type": "string", "description": "/m/<message-id>."},
                    "raw": {"type": "string", "description": "The original .eml."},
                },
            },
        },
    },
    "ThreadList": {
        "type": "object",
        "required": ["threads", "total", "limit", "offset", "next"],
        "properties": {
            "threads": {"type": "array", "items": _ref("ThreadSummary")},
            "total": {"type": "integer", "minimum": 0, "description": "Matching threads."},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "next": {
                "type": ["string", "null"],
                "description": "The next page's URL; null on the last page.",
            },
        },
    },
    "ThreadDetail": {
        "allOf": [
            _ref("ThreadSummary"),
            {
                "type": "object",
                "required": ["messages"],
                "properties": {"messages": {"type": "array", "items": _ref("Message")}},
            },
        ]
    },
    "SearchHit": {
        "type": "object",
        "required": [
            "thread_id",
            "subject",
            "message_id",
            "date",
            "sender",
            "snippet",
            "matches",
            "url",
        ],
        "properties": {
            "thread_id": {"type": "integer"},
            "subject": {"type": "string"},
            "message_id": {"type": "string", "description": "The best matching message."},
            "date": _NULLABLE_DATE_TIME,
            "sender": {"type": "string"},
            "snippet": {
                "type": "string",
                "description": "HTML-escaped text with the hits in <mark>…</mark>.",
            },
            "matches": {"type": "integer", "description": "Matching messages in the thread."},
            "url": {"type": "string"},
        },
    },
    "SearchResults": {
        "type": "object",
        "required": ["query", "page", "per_page", "total_threads", "more", "hints", "results"],
        "properties": {
            "query": {"type": "string"},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer"},
            "total_threads": {"type": "integer", "minimum": 0},
            "more": {
                "type": "boolean",
                "description": "True when more messages matched than were ranked: "
                "total_threads is then a floor.",
            },
            "hints": {"type": "array", "items": {"type": "string"}},
            "results": {"type": "array", "items": _ref("SearchHit")},
        },
    },
    "Space": {
        "type": "object",
        "required": ["slug", "name", "visibility", "url"],
        "properties": {
            "slug": {"type": "string"},
            "name": {"type": "string"},
            "visibility": {"type": "string", "enum": ["members", "staff"]},
            "url": {"type": "string"},
        },
    },
    "SpaceList": {
        "type": "object",
        "required": ["spaces"],
        "properties": {"spaces": {"type": "array", "items": _ref("Space")}},
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _get(
    summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]], errors: tuple[int, ...]
) -> dict[str, Any]:
    responses = {"200": ok} | {str(s): {"$ref": f"#/components/responses/E{s}"} for s in errors}
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
            "security": [{"session": []}, {"bearer": []}],
        }
    }


# Something besides white space, as Python counts it (\x1c-\x1f and \x85 too).
NOT_BLANK = r"[^\s\x1c-\x1f\x85]"


def _post_reply() -> dict[str, Any]:
    """`POST /api/v1/messages`: a reply, sent as reply-all or to the sender."""
    request = {
        "type": "object",
        "required": ["in_reply_to", "body"],
        "properties": {
            "in_reply_to": {
                "type": "string",
                "pattern": NOT_BLANK,
                "description": "The Message-ID answered, with or without angle brackets.",
            },
            "body": {
                "type": "string",
                "pattern": NOT_BLANK,
                "description": "The reply's text (plain text); the parent is quoted after it.",
            },
            "mode": {"enum": ["all", "sender"], "default": "all"},
        },
    }
    created = {
        "type": "object",
        "properties": {"message_id": {"type": "string"}, "thread_id": {"type": "integer"}},
    }
    refused = {"$ref": "#/components/responses/Refused"}
    return {
        "post": {
            "summary": "Reply to a message the reader may see; stored at once, then mailed",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "201": _json(created, "Stored in its thread and queued for the relay."),
                "400": refused,
                "401": {"$ref": "#/components/responses/E401"},
                "403": refused,
                "404": {"$ref": "#/components/responses/E404"},
                "413": refused,
                "429": refused,
            },
            # Writing takes the session and its form token (X-CSRF-Token); never a feed token.
            "security": [{"session": []}],
            "parameters": [_CSRF_HEADER],
        }
    }


def _post(
    summary: str,
    ok: dict[str, Any],
    parameters: list[dict[str, Any]],
    errors: tuple[int, ...],
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A write of the reader's own marks: a session and its form token in `X-CSRF-Token`."""
    responses = {"200": ok} | {str(s): {"$ref": f"#/components/responses/E{s}"} for s in errors}
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [*parameters, _CSRF_HEADER],
        "responses": responses,
        "security": [{"session": []}],
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return {"post": operation}


_CSRF_HEADER = {
    "name": "X-CSRF-Token",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": "The session's form token (the `csrf_token` of the viewer's forms).",
}
_WATCH_BODY = {
    "type": "object",
    "required": ["watch"],
    "properties": {"watch": {"enum": ["follow", "mute", "none"]}},
}
_WATCH_ANSWER = {
    "type": "object",
    "required": ["thread_id", "watch"],
    "properties": {
        "thread_id": {"type": "integer"},
        "watch": {"enum": ["follow", "mute", "none"]},
    },
}
_READ_ANSWER = {
    "type": "object",
    "required": ["thread_id", "unread"],
    "properties": {"thread_id": {"type": "integer"}, "unread": {"type": "integer"}},
}

_LIST_PARAMETERS = [
    _query("space", {"type": "string"}, "Only threads of this space."),
    _query(
        "participant",
        {"type": "string"},
        "Only threads this address took part in (wrote, or was sent To or Cc).",
    ),
    _query("has_attachment", {"type": "boolean"}, "Only threads with (true) an attachment."),
    _query("after", _DAY_OR_TIME, "Only threads active at or after this time."),
    _query("before", _DAY_OR_TIME, "Only threads active before this time."),
    _query("tag", {"type": "string"}, "Only threads with a message the rules tagged so."),
    _query(
        "muted",
        {"type": "boolean"},
        "true: only the threads the reader muted; false (the default): all but those.",
    ),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Page size."),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Threads to skip."),
]
_THREAD_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer"},
    "description": "A thread id; a merged thread's old id answers with the thread it joined.",
}
_MESSAGE_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "A Message-ID, with or without angle brackets (percent-encoded).",
}
_SEARCH_PARAMETERS = [
    {
        "name": "q",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS},
        "description": "The query language of the CLI and the search page: words "
        '(all must match), "phrases", OR (binding tighter than the implicit AND: '
        "`a OR b c` is `(a OR b) c`), parentheses (one level), prefixes (`contra*`, "
        '3 letters at least), -word / -"phrase" / -(a OR b) to exclude (with '
        "anything else narrowing the search, operators included), from:, to:, cc:, "
        "subject:, in:space, has:attachment, filename:, is:, tag:, before:, after:. "
        "What cannot be read is searched as words and explained in `hints`.",
    },
    _query("page", {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_PAGE}, "1-based."),
]


def openapi_document(base_url: str = "") -> dict[str, Any]:
    """The document; `base_url` fills `servers` when known."""
    error = _json(_ref("Error"), "")
    responses = {
        "E400": error | {"description": "A parameter is malformed or out of range."},
        "E401": error | {"description": "Not signed in, and no valid bearer token."},
        "E403": error
        | {
            "description": "A write without the session's form token in X-CSRF-Token "
            "(writes need a signed-in session)."
        },
        "E404": error
        | {"description": "Missing, or not visible to the reader: the two look the same."},
        "Refused": error
        | {"description": "Not sent, and why: empty or too long, a feed token, too many."},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Bridge viewer API",
            "version": "1",
            "description": "The discussions a person may see, replies to them, and the "
            "reader's own marks (follow, mute, read). "
            f"Search pages hold {SEARCH_PAGE_SIZE} threads. Dates are UTC.",
        },
        "paths": {
            "/api/v1/threads": _get(
                "Threads the reader may see, by last activity",
                _json(_ref("ThreadList"), "A page of threads."),
                _LIST_PARAMETERS,
                (400, 401),
            ),
            "/api/v1/threads/{id}": _get(
                "One thread with the messages the reader may see",
                _json(_ref("ThreadDetail"), "The thread."),
                [_THREAD_ID],
                (401, 404),
            ),
            "/api/v1/messages/{message_id}": _get(
                "One message",
                _json(_ref("Message"), "The message."),
                [_MESSAGE_ID],
                (401, 404),
            ),
            "/api/v1/messages": _post_reply(),
            "/api/v1/search": _get(
                "Search, results grouped by thread",
                _json(_ref("SearchResults"), "A page of results."),
                _SEARCH_PARAMETERS,
                (400, 401),
            ),
            "/api/v1/spaces": _get(
                "Spaces the reader may read",
                _json(_ref("SpaceList"), "The spaces."),
                [],
                (401,),
            ),
            "/api/v1/threads/{id}/watch": _post(
                "Follow a thread (first in the digest), mute it (out of lists and digest), "
                "or neither",
                _json(_WATCH_ANSWER, "What the reader now does with the thread."),
                [_THREAD_ID],
                (400, 401, 403, 404),
                _WATCH_BODY,
            ),
            "/api/v1/threads/{id}/read": _post(
                "Mark a thread read up to the newest message the reader may see",
                _json(_READ_ANSWER, "The thread, read."),
                [_THREAD_ID],
                (401, 403, 404),
            ),
            "/api/v1/read": _post(
                "Mark every thread read",
                _json(
                    {
                        "type": "object",
                        "required": ["read"],
                        "properties": {"read": {"type": "boolean"}},
                    },
                    "Done.",
                ),
                [],
                (401, 403),
            ),
        },
        "components": {
            "schemas": SCHEMAS,
            "responses": responses,
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "bridge_session",
                    "description": "The viewer's sign-in cookie.",
                },
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The reader's feed token (from their settings page).",
                },
            },
        },
    }
    if base_url:
        document["servers"] = [{"url": base_url}]
    return document
