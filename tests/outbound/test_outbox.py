"""The outbox and the mailer against a real aiosmtpd relay on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.config import OutboundConfig, parse_config
from bridge.core.admin_rules.loops import ORIGIN_HEADER
from bridge.errors import ConfigError
from bridge.outbound import outbox
from bridge.outbound.mailer import Mailer
from bridge.store.runner import StoreRunner
from tests.smtp_support import Relay, free_port, real_message

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def outgoing(tag: str) -> tuple[bytes, str]:
    """A real corpus message made distinct and marked as the bridge's own."""
    message_id = f"<{tag}@bridge.example.com>"
    data, n = re.subn(
        rb"(?im)^Message-ID:[^\r\n]*", f"Message-ID: {message_id}".encode(), real_message()
    )
    assert n == 1
    return f"{ORIGIN_HEADER}: bridge.example.com\r\n".encode() + data, message_id


def config(port: int) -> OutboundConfig:
    return OutboundConfig(host="127.0.0.1", port=port, tls="none", timeout=5, connect_timeout=5)


def put(engine: Engine, *messages: bytes, now: datetime = T0) -> list[int]:
    with Session(engine) as session, session.begin():
        return [outbox.enqueue(session, m, recipients=["a@example.com"], now=now) for m in messages]


def rows(engine: Engine) -> dict[int, tuple[str, int, str]]:
    from bridge.store.tables import Outbox

    with Session(engine) as session:
        return {
            r.id: (r.status, r.attempts, r.last_error)
            for r in session.query(Outbox).order_by(Outbox.id)
        }


def message_ids(blobs: list[bytes]) -> list[str]:
    return [outbox._header(b, b"message-id") for b in blobs]


def test_enqueue_keeps_the_bytes_and_needs_the_origin_header(engine: Engine) -> None:
    data, message_id = outgoing("keep")
    (row_id,) = put(engine, data)
    with Session(engine) as session, session.begin():
        (item,) = outbox.claim(session, T0, 10)
        assert (item.id, item.data, item.message_id) == (row_id, data, message_id)
        bare = EmailMessage()
        bare["Message-ID"] = "<x@bridge.example.com>"
        with pytest.raises(ValueError, match=ORIGIN_HEADER):
            outbox.enqueue(session, bare, recipients=["a@example.com"], now=T0)
        bare[ORIGIN_HEADER] = "bridge.example.com"
        bare.set_content("hello")
        new_id = outbox.enqueue(session, bare, recipients=["a@example.com"], now=T0)
        (made,) = outbox.claim(session, T0, 10)
        assert made.id == new_id and made.message_id == "<x@bridge.example.com>"
        assert b"\r\nhello\r\n" in made.data


def test_enqueue_rolls_back_with_its_cause(engine: Engine) -> None:
    data, _ = outgoing("rollback")
    with Session(engine) as session:
        outbox.enqueue(session, data, recipients=["a@example.com"], now=T0)
        session.rollback()
    assert rows(engine) == {}


async def test_sent_once_and_not_again(engine: Engine, relay: tuple[Relay, int]) -> None:
    handler, port = relay
    data, _ = outgoing("ok")
    put(engine, data)
    store = StoreRunner(engine)
    try:
        counts = await Mailer(store, config(port), "bridge@example.com").send_due(T0)
        again = await Mailer(store, config(port), "bridge@example.com").send_due(
            T0 + timedelta(hours=3)
        )
    finally:
        store.close()
    assert (counts.sent, counts.retried, counts.failed) == (1, 0, 0)
    assert again.sent == 0
    assert handler.received == [data]  # byte for byte what was enqueued
    assert [s for s, _, _ in rows(engine).values()] == ["sent"]


async def test_4xx_is_retried_later_with_the_same_bytes(
    engine: Engine, relay: tuple[Relay, int]
) -> None:
    handler, port = relay
    data, message_id = outgoing("tempfail")
    put(engine, data)
    store = StoreRunner(engine)
    mailer = Mailer(store, config(port), "bridge@example.com")
    try:
        handler.mode = "4xx"
        assert (await mailer.send_due(T0)).retried == 1
        (state,) = rows(engine).values()
        assert state[0] == "pending" and state[2].startswith("451")
        # Not due again before the backoff has passed.
        assert (await mailer.send_due(T0 + timedelta(seconds=59))).retried == 0
        assert len(handler.attempts) == 1
        handler.mode = "ok"
        assert (await mailer.send_due(T0 + timedelta(minutes=1))).sent == 1
    finally:
        store.close()
    assert len(handler.attempts) == 2
    assert handler.attempts[0] == handler.attempts[1]
    assert message_ids(handler.received) == [message_id]
    assert list(rows(engine).values()) == [("sent", 2, "")]


async def test_5xx_fails_with_the_reason(engine: Engine, relay: tuple[Relay, int]) -> None:
    handler, port = relay
    handler.mode = "5xx"
    bad, bad_id = outgoing("permfail")
    put(engine, bad)
    store = StoreRunner(engine)
    try:
        counts = await Mailer(store, config(port), "bridge@example.com").send_due(T0)
        later = await Mailer(store, config(port), "bridge@example.com").send_due(
            T0 + timedelta(days=1)
        )
    finally:
        store.close()
    assert (counts.failed, later.failed, len(handler.attempts)) == (1, 0, 1)
    with Session(engine) as session:
        (failed,) = outbox.failed(session)
        assert outbox.counts(session) == {"failed": 1}
    assert failed.message_id == bad_id
    assert failed.reason == "550 5.7.1 relaying denied for you"
    assert failed.recipients == ("a@example.com",)


async def test_dropped_connection_is_retried(engine: Engine, relay: tuple[Relay, int]) -> None:
    handler, port = relay
    handler.mode = "drop"
    first, first_id = outgoing("drop1")
    second, second_id = outgoing("drop2")
    put(engine, first, second)
    store = StoreRunner(engine)
    mailer = Mailer(store, config(port), "bridge@example.com")
    try:
        counts = await mailer.send_due(T0)
        assert (counts.sent, counts.retried, counts.failed) == (0, 2, 0)
        assert all(status == "pending" for status, _, _ in rows(engine).values())
        handler.mode = "ok"
        assert (await mailer.send_due(T0 + timedelta(minutes=1))).sent == 2
    finally:
        store.close()
    assert sorted(message_ids(handler.received)) == sorted([first_id, second_id])


async def test_relay_down_for_an_hour_loses_nothing(engine: Engine) -> None:
    port = free_port()  # nothing listens here until the relay comes back
    messages = [outgoing(f"down{i}") for i in range(5)]
    put(engine, *(data for data, _ in messages))
    store = StoreRunner(engine)
    mailer = Mailer(store, config(port), "bridge@example.com")
    handler = Relay()
    controller: Controller | None = None
    try:
        for minute in range(0, 61):
            counts = await mailer.send_due(T0 + timedelta(minutes=minute))
            assert counts.sent == counts.failed == 0
        assert all(status == "pending" for status, _, _ in rows(engine).values())
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        sent = 0
        for minute in range(61, 125):
            sent += (await mailer.send_due(T0 + timedelta(minutes=minute))).sent
    finally:
        store.close()
        if controller is not None:
            controller.stop()
    assert sent == 5
    assert sorted(message_ids(handler.received)) == sorted(mid for _, mid in messages)
    # Tried at 0, 1, 3, 7, 15, 31 minutes down, then sent at 63: backoff, not hammering.
    assert {attempts for _, attempts, _ in rows(engine).values()} == {7}


def test_two_claimers_never_share_a_row(engine: Engine) -> None:
    put(engine, *(outgoing(f"race{i}")[0] for i in range(40)))
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def claimer(slot: int) -> None:
        barrier.wait()
        for _ in range(40):  # a claim that lost every race takes nothing
            with Session(engine) as session, session.begin():
                claimed[slot] += [item.id for item in outbox.claim(session, T0, 3)]

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 40


async def test_two_mailers_send_each_message_once(engine: Engine, relay: tuple[Relay, int]) -> None:
    handler, port = relay
    messages = [outgoing(f"pair{i}") for i in range(20)]
    put(engine, *(data for data, _ in messages))
    stores = [StoreRunner(engine), StoreRunner(engine)]
    cfg = OutboundConfig(host="127.0.0.1", port=port, tls="none", batch_size=4)
    mailers = [Mailer(s, cfg, "bridge@example.com") for s in stores]
    try:
        for _ in range(5):
            await asyncio.gather(*(m.send_due(T0) for m in mailers))
    finally:
        for s in stores:
            s._writer.shutdown(wait=True)
            s._readers.shutdown(wait=True)
    assert sorted(message_ids(handler.received)) == sorted(mid for _, mid in messages)


def test_an_expired_lease_is_claimable_again(engine: Engine) -> None:
    put(engine, outgoing("lease")[0])
    with Session(engine) as session, session.begin():
        (crashed,) = outbox.claim(session, T0, 10)
    with Session(engine) as session, session.begin():
        assert outbox.claim(session, T0 + outbox.LEASE - timedelta(seconds=1), 10) == []
        (again,) = outbox.claim(session, T0 + outbox.LEASE, 10)
        # The crashed sender's lease is gone: its late answer changes nothing.
        assert not outbox.mark_sent(session, crashed, T0)
        assert outbox.mark_sent(session, again, T0 + outbox.LEASE)
    assert list(rows(engine).values()) == [("sent", 1, "")]


def test_a_released_message_is_claimable_at_once_untried(engine: Engine) -> None:
    put(engine, outgoing("release")[0])
    with Session(engine) as session, session.begin():
        (item,) = outbox.claim(session, T0, 10)
        assert outbox.claim(session, T0, 10) == []
        assert outbox.release(session, item)
        (again,) = outbox.claim(session, T0, 10)
    assert again.attempts == 0 and again.lease_token != item.lease_token


def test_backoff_doubles_to_an_hour_and_gives_up_after_two_days(engine: Engine) -> None:
    delays = [outbox.retry_delay(n) for n in range(1, 10)]
    assert delays[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert max(delays) == timedelta(hours=1)
    put(engine, outgoing("giveup")[0])
    now = T0
    with Session(engine) as session, session.begin():
        while True:
            (item,) = outbox.claim(session, now, 1)
            if outbox.mark_retry(session, item, "451 later", now) == outbox.FAILED:
                break
            now += outbox.retry_delay(item.attempts + 1)
        (gone,) = outbox.failed(session)
    assert now - T0 >= outbox.GIVE_UP_AFTER
    assert gone.reason == "gave up: 451 later"
    assert 40 < gone.attempts < 60


async def test_a_missing_relay_password_retries_and_never_fails_mail(
    engine: Engine, relay: tuple[Relay, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = relay
    monkeypatch.delenv("BRIDGE_TEST_RELAY_PASSWORD", raising=False)
    put(engine, outgoing("nopass")[0])
    cfg = dataclasses.replace(
        config(port), username="bridge", password_env="BRIDGE_TEST_RELAY_PASSWORD"
    )
    store = StoreRunner(engine)
    try:
        counts = await Mailer(store, cfg, "bridge@example.com").send_due(T0)
    finally:
        store.close()
    assert (counts.sent, counts.retried, counts.failed) == (0, 1, 0)
    (state,) = rows(engine).values()
    assert state[0] == "pending" and "BRIDGE_TEST_RELAY_PASSWORD" in state[2]
    assert handler.attempts == []


def test_outbound_config_checks() -> None:
    ok = parse_config({"outbound": {"host": "smtp.example.com", "tls": "tls"}}, "b.toml")
    assert ok.outbound.server_port == 465
    assert OutboundConfig().server_port == 587
    with pytest.raises(ConfigError, match=r"outbound\.password: .*inline passwords are refused"):
        parse_config({"outbound": {"password": "hunter2"}}, "b.toml")
    with pytest.raises(ConfigError, match=r"outbound\.password_env"):
        parse_config({"outbound": {"username": "bridge"}}, "b.toml")
    with pytest.raises(ConfigError, match=r"outbound\.tls"):
        parse_config({"outbound": {"tls": "ssl"}}, "b.toml")


async def test_the_daemon_scheduler_sends_the_outbox(
    tmp_path: Path, relay: tuple[Relay, int]
) -> None:
    from bridge.config import parse_config
    from bridge.daemon import Daemon

    handler, port = relay
    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {"listeners": [{"port": 0}]},
        "web": {"port": 0},
        "bridge": {"message_id_domain": "bridge.example.com", "address": "bridge@example.com"},
        "outbound": {"host": "127.0.0.1", "port": port, "tls": "none"},
    }
    daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await daemon.start()
    try:
        message, message_id = outgoing("from-the-daemon")
        now = datetime.now(UTC)
        await daemon.store.write(
            lambda s: outbox.enqueue(s, message, recipients=["a@example.com"], now=now)
        )
        assert "outbox" in daemon.health_status()["scheduler"]["jobs"]
        await daemon.scheduler._send_mail()
    finally:
        await daemon.stop()
    assert message_ids(handler.received) == [message_id]
