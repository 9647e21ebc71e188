"""The OpenAPI document against the running app, with schemathesis.

The app runs on a free loopback port (a thread with its own event loop)
over real imported mail; schemathesis loads the document the app serves and
sends generated requests to every operation as a signed-in reader (by
cookie, then by bearer token): no 5xx, and every answer matches its
documented status, content type and schema.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from sqlalchemy import Engine

from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from bridge.web.account.auth_store import feed_token
from bridge.web.frame.keys import SIGNER
from tests.web.support import ENRON, LKML, imported, sign_in, viewer_app

READER = "k..allen@enron.com"


class Served:
    """The app listening on a free port in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = self.runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path: Path = tmp_path_factory.mktemp("openapi") / "bridge.db"
    engine: Engine = make_engine(str(path))
    upgrade(engine)
    config = imported(engine, [ENRON, LKML])
    server = Served(viewer_app(engine, config))
    try:
        yield server
    finally:
        server.close()
        engine.dispose()


def operations(served: Served) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{served.base}/api/v1/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in found} == {
        "/api/v1/threads",
        "/api/v1/threads/{id}",
        "/api/v1/messages/{message_id}",
        "/api/v1/messages",
        "/api/v1/search",
        "/api/v1/spaces",
        "/api/v1/threads/{id}/watch",
        "/api/v1/threads/{id}/read",
        "/api/v1/read",
    }
    return found


def exercise(
    operation: schemathesis.APIOperation, base: str, headers: dict[str, str], *, cookies: bool
) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        if not cookies:
            # Only the bearer token speaks for the reader (no generated session cookie).
            case.cookies = {}
        with requests.Session() as session:
            case.call_and_validate(base_url=base, session=session, headers=headers)

    run()


def form_token(served: Served, headers: dict[str, str]) -> str:
    """The session's form token, as a page's forms carry it (writes need it)."""
    with requests.get(served.base + "/settings", headers=headers, timeout=30) as page:
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the settings page has no form token"
    return found.group(1)


def test_every_operation_matches_the_document_when_signed_in(served: Served) -> None:
    headers = sign_in(served.app, READER)
    # Generated replies go to generated Message-IDs: 400 or 404, never a 5xx.
    headers["X-CSRF-Token"] = form_token(served, headers)
    for operation in operations(served):
        exercise(operation, served.base, headers, cookies=True)


def test_every_operation_matches_the_document_with_a_bearer_token(served: Served) -> None:
    token = feed_token(served.app[SIGNER], READER, 0)
    headers = {"Authorization": f"Bearer {token}"}
    for operation in operations(served):
        if operation.path in ("/api/v1/threads", "/api/v1/search"):
            exercise(operation, served.base, headers, cookies=False)


def test_signed_out_every_operation_answers_the_documented_401(served: Served) -> None:
    for operation in operations(served):
        path = operation.path.replace("{id}", "1").replace("{message_id}", "x@y")
        if operation.method.upper() == "POST":
            # Writes take a session: signed out, they are refused before anything is read.
            reply = {"in_reply_to": "<x@y>", "body": "hello"}
            body = reply if path == "/api/v1/messages" else {"watch": "follow"}
            with requests.post(served.base + path, json=body, timeout=30) as answer:
                assert answer.status_code == 401
                assert "401" in operation.definition.raw["responses"]
                operation.validate_response(answer)
            continue
        assert "401" in operation.definition.raw["responses"]
        with requests.get(served.base + path, params={"q": "west"}, timeout=30) as response:
            assert response.status_code == 401
            assert response.json()["error"] == "unauthorized"
            operation.validate_response(response)
