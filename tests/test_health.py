"""`/healthz` says what is failing, with a status code load balancers and monitoring act on.

It once stayed green while every delivery got 451 (the store refused writes)
and while an IMAP account was in error. Here, against a real daemon: a store
that refuses writes makes it 503 until a message is stored again (on SQLite
and PostgreSQL); an IMAP account with a wrong password on a real Dovecot
makes it "degraded", 200 for a load balancer and 503 with `?strict=1`; mail
waiting in the outbox for over an hour is reported the same way.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import parse_config
from bridge.core.admin_rules.loops import ORIGIN_HEADER
from bridge.daemon import Daemon
from bridge.outbound.outbox import enqueue
from tests.dovecot import Dovecot
from tests.ingest.test_transient import write_lock
from tests.smtp_support import fresh_copy, real_message

MakeDaemon = Callable[..., "asyncio.Future[Daemon]"]


@pytest.fixture
async def make_daemon(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    running: list[Daemon] = []

    async def make(**extra: Any) -> Daemon:
        data = {
            "database": {"url": database_url, "busy_timeout": 0.5},
            "smtp": {"domains": ["example.com"], "listeners": [{"port": 0}]},
            "web": {"port": 0},
            **extra,
        }
        daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
        await daemon.start()
        running.append(daemon)
        return daemon

    yield make
    for daemon in running:
        await daemon.stop()


async def health(daemon: Daemon, query: str = "") -> tuple[int, dict[str, Any]]:
    assert daemon.web_bound is not None
    url = f"http://127.0.0.1:{daemon.web_bound.port}/healthz{query}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


def send(daemon: Daemon, tag: str) -> int:
    port = next(b.port for b in daemon.smtp_bound if b.protocol == "smtp")
    data, _ = fresh_copy(real_message(0), tag)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail("sender@example.com")
        client.rcpt("alice@example.com")
        return int(client.data(data)[0])


async def test_a_store_refusing_writes_makes_health_503_until_mail_is_stored(
    make_daemon: Any, database_url: str
) -> None:
    daemon = await make_daemon()
    assert (await health(daemon))[0] == 200
    with write_lock(database_url):
        assert await asyncio.to_thread(send, daemon, "refused") == 451
    status, body = await health(daemon)
    assert status == 503 and body["status"] == "error"
    assert body["failing"] == ["store"]
    assert body["sources"]["store"]["writes"] == "failing"
    assert "OperationalError" in body["sources"]["store"]["error"]

    assert await asyncio.to_thread(send, daemon, "stored") == 250
    status, body = await health(daemon)
    assert (status, body["status"], body["failing"]) == (200, "ok", [])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_imap_account_in_error_is_degraded_and_strict_says_503(
    make_daemon: Any, dovecot: Dovecot
) -> None:
    os.environ["BRIDGE_TEST_HEALTH_PW"] = "not-alice-pw"
    account = {
        "name": "alice",
        "host": dovecot.host,
        "port": dovecot.port,
        "tls": "plain",
        "username": "alice",
        "password_env": "BRIDGE_TEST_HEALTH_PW",
        "poll_interval": 0.5,
        "connect_timeout": 3.0,
    }
    daemon = await make_daemon(imap={"accounts": [account]})
    for _ in range(100):
        status, body = await health(daemon)
        if body["failing"]:
            break
        await asyncio.sleep(0.1)
    assert (status, body["status"], body["failing"]) == (200, "degraded", ["imap:alice"])
    assert body["sources"]["imap:alice"]["state"] == "error"
    assert "auth" in (body["sources"]["imap:alice"]["last_error"] or "").lower()
    status, body = await health(daemon, "?strict=1")
    assert (status, body["status"]) == (503, "degraded")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_mail_waiting_in_the_outbox_for_an_hour_is_degraded(make_daemon: Any) -> None:
    daemon = await make_daemon()
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "bridge@example.com", "a@example.com", "x"
    message[ORIGIN_HEADER] = "bridge.example.com"
    message.set_content("waiting\n")
    await daemon.store.write(
        lambda s: enqueue(
            s, message, recipients=["a@example.com"], now=datetime.now(UTC) - timedelta(hours=2)
        )
    )
    status, body = await health(daemon)
    assert (status, body["status"], body["failing"]) == (200, "degraded", ["outbox"])
    assert body["sources"]["outbox"]["pending"] == 1
    assert body["sources"]["outbox"]["oldest_pending_seconds"] >= 7200
