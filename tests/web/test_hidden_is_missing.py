"""A hidden object's 404 does the same database work as a missing one's, on every route.

Hidden threads, messages, originals, attachments and people once answered
1 to 1.5 ms later than missing ones (medians of 150 requests): one more
query ran only for what exists. Timing is not asserted here; the cause is:
the SQL statements a 404 runs for something the reader may not see must be
exactly those it runs for something that does not exist, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from bridge.store.tables import Attachment, Message, Person, ThreadMark
from tests.web.auth_helpers import form_token
from tests.web.support import ENRON, MIME, imported, sign_in, viewer_app

READER = "outside.analyst@example.org"  # member of "gas": sees SoCal, nothing of West


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def hidden_objects(engine: Engine) -> dict[str, str]:
    """A route to something that exists and READER may not see, for each kind."""
    with Session(engine) as session:
        west = session.execute(
            select(Message).where(Message.subject.startswith("RE: West Position")).limit(1)
        ).scalar_one()
        attached = session.execute(
            select(Attachment.message_pk, Attachment.position).limit(1)
        ).one()
        person = session.execute(
            select(Person.address).where(Person.address == "k..allen@enron.com")
        ).scalar_one()
    mid = quote(west.message_id, safe="@")
    return {
        "thread": f"/t/{west.thread_id}",
        "message": f"/m/{mid}",
        "raw": f"/raw/{west.id}",
        "attachment": f"/a/{attached.message_pk}/{attached.position}",
        "person": f"/p/{quote(person, safe='@')}",
        "api thread": f"/api/v1/threads/{west.thread_id}",
        "api message": f"/api/v1/messages/{mid}",
    }


MISSING = {
    "thread": "/t/987654",
    "message": "/m/no.such.message@example.com",
    "raw": "/raw/987654",
    "attachment": "/a/987654/0",
    "person": "/p/nobody.at.all@example.com",
    "api thread": "/api/v1/threads/987654",
    "api message": "/api/v1/messages/no.such.message@example.com",
}


async def test_hidden_and_missing_run_the_same_statements(
    engine: Engine, aiohttp_client: Any
) -> None:
    config = imported(engine, [ENRON, MIME / "cpython-test_email-data"])
    app = viewer_app(engine, config)
    client = await aiohttp_client(app)
    headers = sign_in(app, READER)
    hidden = hidden_objects(engine)
    for kind, path in hidden.items():
        answers = []
        for asked in (path, MISSING[kind], path, MISSING[kind]):
            with statements(engine) as ran:
                response = await client.get(asked, headers=headers, allow_redirects=False)
                body = await response.read()
            # The page names the path asked (its language form returns there).
            body = body.replace(asked.encode(), b"PATH")
            answers.append((response.status, body, list(ran)))
        # Asked twice each: the second time, whatever is kept per reader is warm.
        for first, second in ((answers[0], answers[1]), (answers[2], answers[3])):
            assert first[0] == second[0] == 404, kind
            assert first[1] == second[1], kind
            assert first[2] == second[2], f"{kind}: {first[2]} != {second[2]}"


async def test_following_or_reading_a_hidden_thread_is_a_missing_one(
    engine: Engine, aiohttp_client: Any
) -> None:
    """The reader's marks (follow, mute, read) on a hidden thread: the same 404, the
    same statements as on a missing one, and nothing written."""
    config = imported(engine, [ENRON, MIME / "cpython-test_email-data"])
    app = viewer_app(engine, config)
    client = await aiohttp_client(app)
    headers = sign_in(app, READER)
    home = await client.get("/", headers=headers)
    token = form_token(await home.text())
    west = hidden_objects(engine)["thread"].rsplit("/", 1)[1]
    asks: list[tuple[str, dict[str, Any]]] = [
        ("/t/{}/watch", {"data": {"csrf_token": token, "watch": "follow"}}),
        ("/t/{}/watch", {"data": {"csrf_token": token, "watch": "mute"}}),
        ("/api/v1/threads/{}/watch", {"json": {"watch": "follow"}}),
        ("/api/v1/threads/{}/read", {}),
    ]
    for template, body in asks:
        answers = []
        for thread in (west, "987654", west, "987654"):
            with statements(engine) as ran:
                response = await client.post(
                    template.format(thread),
                    headers={**headers, "X-CSRF-Token": token},
                    allow_redirects=False,
                    **body,
                )
                text = (await response.read()).replace(template.format(thread).encode(), b"PATH")
            answers.append((response.status, text, list(ran)))
        for first, second in ((answers[0], answers[1]), (answers[2], answers[3])):
            assert first[0] == second[0] == 404, template
            assert first[1] == second[1], template
            assert first[2] == second[2], f"{template}: {first[2]} != {second[2]}"
    with Session(engine) as session:
        assert session.execute(select(ThreadMark)).first() is None
