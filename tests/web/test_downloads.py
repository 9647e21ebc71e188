"""Originals and attachments: byte-exact, served as downloads with safe headers."""

from __future__ import annotations

import email
import hashlib
from collections.abc import Awaitable, Callable
from email import policy
from urllib.parse import unquote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.store.tables import Attachment, Message
from bridge.web.pages.downloads import INERT_IMAGES, disposition, safe_filename
from tests.web.support import MIME, imported, sign_in, viewer_app

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]
FILES = [
    MIME / "ruby-mail" / "attachment_with_encoded_name.eml",
    MIME / "ruby-mail" / "attachment_message_rfc822.eml",
    MIME / "enmime" / "mime-bad-8bit-filename.raw",
    MIME / "cpython-test_email-data" / "msg_26.txt",
    MIME / "zbateson-mail-mime-parser" / "github-115.txt",
]


@pytest.fixture
async def client(sqlite_engine: Engine, aiohttp_client: ClientMaker) -> Client:
    app = viewer_app(sqlite_engine, imported(sqlite_engine, FILES))
    return await aiohttp_client(app)


def reader_of(message: email.message.EmailMessage) -> str:
    for name in ("To", "From"):
        if message[name] is not None and message[name].addresses:
            return str(message[name].addresses[0].addr_spec)
    raise AssertionError("no reader")


def stdlib_attachments(
    message: email.message.EmailMessage,
) -> list[tuple[str | None, bytes | email.message.Message]]:
    """Each attachment's name and content as the stdlib (policy=default) extracts them,
    not descending into forwarded messages (they are one attachment each)."""
    found: list[tuple[str | None, bytes | email.message.Message]] = []
    stack: list[email.message.EmailMessage] = [message]
    while stack:
        part = stack.pop()
        if part is not message and part.get_content_maintype() == "message":
            found.append((part.get_filename(), part.get_content()))
        elif part.is_multipart():
            stack.extend(reversed(list(part.iter_parts())))  # type: ignore[arg-type]
        elif part.get_content_disposition() == "attachment" or part.get_filename():
            data = part.get_payload(decode=True)
            assert isinstance(data, bytes)
            found.append((part.get_filename(), data))
    return found


async def test_attachments_are_byte_exact_with_safe_headers(
    client: Client, sqlite_engine: Engine
) -> None:
    checked = 0
    with Session(sqlite_engine) as session:
        stored = session.execute(select(Message.id, Message.raw_sha256)).all()
        for pk, _sha in stored:
            raw = session.execute(select(Message).where(Message.id == pk)).scalar_one()
            rows = (
                session.execute(
                    select(Attachment)
                    .where(Attachment.message_pk == pk)
                    .order_by(Attachment.position)
                )
                .scalars()
                .all()
            )
            if not rows:
                continue
            assert raw is not None
            message = email.message_from_bytes(_original(session, pk), policy=policy.default)
            expected = stdlib_attachments(message)  # type: ignore[arg-type]
            assert len(expected) == len(rows)
            headers = sign_in(client.app, reader_of(message))  # type: ignore[arg-type]
            for row, (name, content) in zip(rows, expected, strict=True):
                response = await client.get(f"/a/{pk}/{row.position}", headers=headers)
                assert response.status == 200
                body = await response.read()
                if isinstance(content, bytes):
                    assert body == content
                else:  # a forwarded message: the same message, as sent
                    inner = email.message_from_bytes(body, policy=policy.default)
                    assert inner["Message-ID"] == content["Message-ID"]
                    assert inner["Subject"] == content["Subject"]
                    assert inner.get_body() is not None
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
                kept = row.content_type if row.content_type in INERT_IMAGES else ""
                assert response.headers["Content-Type"] == (kept or "application/octet-stream")
                cd = response.headers["Content-Disposition"]
                assert cd.startswith('attachment; filename="')
                exact = unquote(cd.split("filename*=UTF-8''", 1)[1])
                assert exact == safe_filename(row.filename, "x")
                if name:
                    assert row.filename == name
                checked += 1
    assert checked >= 3


def _original(session: Session, pk: int) -> bytes:
    from bridge.store.read.reading import raw_bytes

    sha = session.execute(select(Message.raw_sha256).where(Message.id == pk)).scalar_one()
    return raw_bytes(session, sha)


async def test_original_is_the_message_as_received(client: Client, sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session:
        pk, sha = session.execute(select(Message.id, Message.raw_sha256).limit(1)).one()
        message = email.message_from_bytes(_original(session, pk), policy=policy.default)
    response = await client.get(f"/raw/{pk}", headers=sign_in(client.app, reader_of(message)))  # type: ignore[arg-type]
    assert response.status == 200
    assert hashlib.sha256(await response.read()).hexdigest() == sha
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith(
        f'attachment; filename="message-{pk}.eml"'
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_outsiders_and_bad_ids_get_404(client: Client, sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as session:
        pk = session.execute(select(Attachment.message_pk).limit(1)).scalar_one()
    outsider = sign_in(client.app, "nobody@example.net")
    pages = []
    for path in (
        f"/raw/{pk}",
        f"/a/{pk}/0",
        "/raw/999999",
        "/a/999999/0",
        f"/a/{pk}/4000",
        "/raw/99999999999",
        "/a/1/999999999",
    ):
        response = await client.get(path, headers=outsider)
        assert response.status == 404, path
        pages.append(response.headers["Content-Type"])
    assert (await client.get("/a/x/0", headers=outsider)).status == 404


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ('a"b\r\nSet-Cookie: x.txt', "abSet-Cookie x.txt"),
        ("..hidden", "hidden"),
        ("", "fallback"),
        ("résumé 2001.pdf", "résumé 2001.pdf"),
    ],
)
def test_filenames_are_cut_to_something_safe(given: str, safe: str) -> None:
    assert safe_filename(given, "fallback") == safe
    header = disposition(safe)
    assert "\r" not in header and "\n" not in header
    ascii_part = header.split('filename="', 1)[1].split('"', 1)[0]
    assert ascii_part.isascii() and "/" not in ascii_part and "\\" not in ascii_part
