"""SMTP and LMTP against the real listener on free loopback ports, with smtplib and swaks."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.store.db import make_engine
from bridge.store.runner import StoreRunner
from bridge.web.app import make_app
from bridge.web.frame.metrics import Metrics
from tests.smtp_support import fresh_copy, real_message

MakeDaemon = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def make_daemon(tmp_path: Path) -> AsyncIterator[MakeDaemon]:
    daemons: list[Daemon] = []

    async def make(**smtp: Any) -> Daemon:
        smtp.setdefault("domains", ["example.com"])
        smtp.setdefault("listeners", [{"port": 0}, {"port": 0, "protocol": "lmtp"}])
        data = {
            "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
            "smtp": smtp,
            "web": {"port": 0},
        }
        daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        await daemon.stop()


def port(daemon: Daemon, protocol: str = "smtp") -> int:
    return next(b.port for b in daemon.smtp_bound if b.protocol == protocol)


async def stored(daemon: Daemon) -> list[tuple[str, str, str]]:
    """(message_id, source, envelope_to) of every delivery."""
    sql = text(
        "SELECT m.message_id, d.source, d.envelope_to FROM deliveries d "
        "JOIN messages m ON m.id = d.message_pk ORDER BY d.id"
    )
    rows = await daemon.store.read(lambda s: s.execute(sql).all())
    return [tuple(r) for r in rows]


def send(smtp_port: int, rcpts: list[str], data: bytes, **kw: Any) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        return client.sendmail("sender@enron.com", rcpts, data, **kw)


async def test_message_is_stored_before_250_with_envelope_recipients(
    make_daemon: MakeDaemon,
) -> None:
    daemon = await make_daemon()
    data, mid = fresh_copy(real_message(0), "one")
    refused = await asyncio.to_thread(
        send, port(daemon), ["alice@example.com", "bob@example.com"], data
    )
    assert refused == {}
    # 250 came back, so the row is already committed: no waiting needed.
    assert await stored(daemon) == [(mid, "smtp", "alice@example.com\nbob@example.com")]


async def test_unknown_recipient_is_refused_at_rcpt(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon(domains=["example.com", "team@other.org"])

    def dialogue() -> tuple[tuple[int, bytes], ...]:
        with smtplib.SMTP("127.0.0.1", port(daemon), timeout=10) as client:
            client.ehlo()
            client.mail("sender@enron.com")
            return (
                client.rcpt("stranger@elsewhere.net"),
                client.rcpt("someone@other.org"),
                client.rcpt("team@other.org"),
                client.rcpt("Alice@EXAMPLE.com"),
            )

    stranger, someone, team, alice = await asyncio.to_thread(dialogue)
    assert stranger[0] == 550 and stranger[1].startswith(b"5.1.1")
    assert someone[0] == 550
    assert team[0] == 250 and alice[0] == 250


async def test_all_recipients_refused_stores_nothing(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await asyncio.to_thread(send, port(daemon), ["x@relay.test"], real_message(1))
    assert await stored(daemon) == []


async def test_size_is_refused_at_mail_and_after_data(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon(max_message_bytes=2000)
    big = real_message(0)  # about 4 kB
    assert len(big) > 2000

    def dialogue() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port(daemon), timeout=10) as client:
            client.ehlo()
            assert client.has_extn("size") and client.esmtp_features["size"] == "2000"
            at_mail = client.mail("sender@enron.com", ["SIZE=5000"])
            client.rset()
            client.mail("sender@enron.com")
            client.rcpt("alice@example.com")
            at_data = client.data(big)
            return at_mail, at_data

    at_mail, at_data = await asyncio.to_thread(dialogue)
    assert at_mail[0] == 552 and at_mail[1].startswith(b"5.3.4")
    assert at_data[0] == 552
    assert await stored(daemon) == []


async def test_lmtp_answers_per_recipient(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon()
    data, mid = fresh_copy(real_message(0), "lmtp")
    reader, writer = await asyncio.open_connection("127.0.0.1", port(daemon, "lmtp"))

    async def say(line: str) -> list[str]:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        return await replies()

    async def replies(count: int = 1) -> list[str]:
        lines: list[str] = []
        while len(lines) < count:
            line = (await reader.readline()).decode().rstrip("\r\n")
            lines.append(line)
            if line[3:4] == "-":
                count += 1
        return lines

    assert (await replies())[0].startswith("220")
    assert (await say("EHLO mta.test"))[-1].startswith("500")  # LMTP wants LHLO
    assert (await say("LHLO mta.test"))[-1].startswith("250")
    assert (await say("MAIL FROM:<sender@enron.com>"))[0].startswith("250")
    assert (await say("RCPT TO:<alice@example.com>"))[0].startswith("250")
    assert (await say("RCPT TO:<nobody@relay.test>"))[0].startswith("550 5.1.1")
    assert (await say("RCPT TO:<bob@example.com>"))[0].startswith("250")
    assert (await say("DATA"))[0].startswith("354")
    writer.write(data + b".\r\n")
    per_recipient = await replies(2)
    assert per_recipient == [
        "250 2.0.0 Message accepted <alice@example.com>",
        "250 2.0.0 Message accepted <bob@example.com>",
    ]
    writer.close()
    await writer.wait_closed()
    assert await stored(daemon) == [(mid, "lmtp", "alice@example.com\nbob@example.com")]


async def test_swaks_over_smtp_and_lmtp(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = await make_daemon()
    data, mid = fresh_copy(real_message(1), "swaks")
    path = tmp_path / "m.eml"
    path.write_bytes(data)
    lmtp_data, lmtp_mid = fresh_copy(real_message(2), "swaks-lmtp")
    lmtp_path = tmp_path / "l.eml"
    lmtp_path.write_bytes(lmtp_data)

    def swaks(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["swaks", "--from", "sender@enron.com", "--suppress-data", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    smtp = await asyncio.to_thread(
        swaks, "--server", f"127.0.0.1:{port(daemon)}", "--to", "a@example.com", "--data", str(path)
    )
    assert smtp.returncode == 0, smtp.stdout + smtp.stderr
    assert "<-  250 2.0.0 Message accepted" in smtp.stdout
    lmtp = await asyncio.to_thread(
        swaks,
        "--protocol",
        "LMTP",
        "--server",
        f"127.0.0.1:{port(daemon, 'lmtp')}",
        "--to",
        "a@example.com,b@example.com",
        "--data",
        str(lmtp_path),
    )
    assert lmtp.returncode == 0, lmtp.stdout + lmtp.stderr
    assert "250 2.0.0 Message accepted <b@example.com>" in lmtp.stdout
    ids = {row[0] for row in await stored(daemon)}
    assert ids == {mid, lmtp_mid}


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


async def test_starttls_with_the_configured_certificate(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    daemon = await make_daemon(tls_cert=cert, tls_key=key, require_tls=True)
    data, mid = fresh_copy(real_message(0), "tls")

    def dialogue() -> tuple[int, str]:
        context = ssl.create_default_context(cafile=cert)
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", port(daemon), timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls")
            before = client.mail("sender@enron.com")[0]  # refused: TLS is required
            client.starttls(context=context)
            peer = client.sock.getpeercert()  # type: ignore[union-attr]
            client.sendmail("sender@enron.com", ["alice@example.com"], data)
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        return before, str(subject.get("commonName"))

    before, common_name = await asyncio.to_thread(dialogue)
    assert before == 530
    assert common_name == "localhost"
    assert [row[0] for row in await stored(daemon)] == [mid]


async def test_smtputf8_address(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon(domains=["exämple.com"])
    data, mid = fresh_copy(real_message(1), "utf8")
    refused = await asyncio.to_thread(
        send, port(daemon), ["jürgen@exämple.com"], data, mail_options=["SMTPUTF8"]
    )
    assert refused == {}
    assert await stored(daemon) == [(mid, "smtp", "jürgen@exämple.com")]


async def test_connection_caps_answer_421(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon(max_connections=3, max_connections_per_client=2)

    def dialogue() -> tuple[int, bytes]:
        with (
            smtplib.SMTP("127.0.0.1", port(daemon), timeout=10),
            smtplib.SMTP("127.0.0.1", port(daemon, "lmtp"), timeout=10),
        ):
            with pytest.raises(smtplib.SMTPConnectError) as info:
                smtplib.SMTP("127.0.0.1", port(daemon), timeout=10)
            return info.value.smtp_code, info.value.smtp_error

    code, message = await asyncio.to_thread(dialogue)
    assert code == 421 and message.startswith(b"4.7.0")
    # once those closed, a client is welcome again
    await asyncio.sleep(0.1)
    assert await asyncio.to_thread(send, port(daemon), ["a@example.com"], real_message(0)) == {}
    assert daemon.guard.refused == 1


async def test_idle_and_session_timeouts_close_the_connection(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon(idle_timeout=0.3, session_timeout=1.0)

    def idle() -> None:
        with smtplib.SMTP("127.0.0.1", port(daemon), timeout=10) as client:
            client.ehlo()
            __import__("time").sleep(0.8)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()

    def chatty() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port(daemon), timeout=10) as client:
            for _ in range(40):  # always busy, but the session may last 1 s
                code, message = client.noop()
                if code != 250:
                    return code, message
                __import__("time").sleep(0.1)
        return 0, b""

    await asyncio.to_thread(idle)
    code, message = await asyncio.to_thread(chatty)
    assert code == 421 and message.startswith(b"4.4.2")


async def test_handler_error_answers_451_not_500(
    make_daemon: MakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = await make_daemon()

    async def broken(raw: object) -> object:
        raise RuntimeError("disk on fire")

    assert daemon.committer is not None
    monkeypatch.setattr(daemon.committer, "submit", broken)
    with pytest.raises(smtplib.SMTPDataError) as info:
        await asyncio.to_thread(send, port(daemon), ["a@example.com"], real_message(0))
    assert info.value.smtp_code == 451
    assert b"disk on fire" not in info.value.smtp_error


async def test_drain_finishes_the_message_in_data_and_refuses_newcomers(
    make_daemon: MakeDaemon,
) -> None:
    daemon = await make_daemon()
    data, mid = fresh_copy(real_message(0), "drain")
    reader, writer = await asyncio.open_connection("127.0.0.1", port(daemon))
    await reader.readline()
    for line in ("HELO mta.test", "MAIL FROM:<s@enron.com>", "RCPT TO:<a@example.com>", "DATA"):
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        await reader.readline()
    half = len(data) // 2
    writer.write(data[:half])
    await writer.drain()
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    drain = loop.create_task(daemon.guard.drain(loop.time() + 5))
    await asyncio.sleep(0.1)

    def newcomer() -> int:
        with pytest.raises(smtplib.SMTPConnectError) as info:
            smtplib.SMTP("127.0.0.1", port(daemon), timeout=10)
        return info.value.smtp_code

    assert await asyncio.to_thread(newcomer) == 421
    writer.write(data[half:] + b".\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"250 2.0.0")
    assert (await reader.readline()).startswith(b"421 4.3.2")  # then closed
    await asyncio.wait_for(drain, 5)
    writer.close()
    assert [row[0] for row in await stored(daemon)] == [mid]


async def test_reload_changes_domains_without_dropping_the_session(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = await make_daemon()
    path = tmp_path / "bridge.toml"
    reader, writer = await asyncio.open_connection("127.0.0.1", port(daemon))

    async def say(line: str) -> str:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        return (await reader.readline()).decode()

    await reader.readline()
    await say("HELO mta.test")
    await say("MAIL FROM:<s@enron.com>")
    assert (await say("RCPT TO:<a@new.example>")).startswith("550")
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/bridge.db"\n'
        '[smtp]\ndomains = ["example.com", "new.example"]\n',
        encoding="utf-8",
    )
    assert await daemon.reload(str(path)) is True
    assert (await say("RCPT TO:<a@new.example>")).startswith("250")
    path.write_text('[smtp]\nport = "x"\n', encoding="utf-8")
    assert await daemon.reload(str(path)) is False
    assert daemon.config.smtp.domains == ("example.com", "new.example")
    assert (await say("RCPT TO:<b@new.example>")).startswith("250")
    writer.close()
    await writer.wait_closed()


async def test_healthz_and_metrics(make_daemon: MakeDaemon) -> None:
    daemon = await make_daemon()
    daemon.status["imap:sales"] = {"state": "idle", "lag_seconds": 0.5}
    daemon.metrics.imap_lag.labels(account="sales").set(0.5)
    data, _ = fresh_copy(real_message(0), "metrics")
    await asyncio.to_thread(send, port(daemon), ["a@example.com"], data)
    assert daemon.web_bound is not None
    base = f"http://127.0.0.1:{daemon.web_bound.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            health = await resp.json()
        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=")
            metrics = await resp.text()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["sources"]["imap:sales"] == {"state": "idle", "lag_seconds": 0.5}
    assert health["sources"]["smtp"]["state"] == "listening"
    assert 'bridge_messages_total{outcome="stored",source="smtp"} 1.0' in metrics
    assert 'bridge_smtp_sessions_total{protocol="smtp",result="accepted"} 1.0' in metrics
    assert 'bridge_imap_lag_seconds{account="sales"} 0.5' in metrics


async def test_healthz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    store = StoreRunner(make_engine(f"sqlite:///{tmp_path}/db"))
    # Then the file goes and a directory takes its place: the store is unreachable.
    (tmp_path / "db").unlink(missing_ok=True)
    (tmp_path / "db").mkdir()
    app = make_app(store, Metrics(), lambda: {"imap:a": {"state": "error", "ok": False}})
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{runner.addresses[0][1]}/healthz") as resp,
        ):
            body = await resp.json()
            assert resp.status == 503
    finally:
        await runner.cleanup()
        store.close()
    assert body["status"] == "error" and "OperationalError" in body["database"]


async def test_a_failing_batch_is_stored_one_by_one_and_the_culprit_quarantined(
    make_daemon: MakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge import group_commit, pipeline
    from bridge.core.message import Provenance, RawMessage

    daemon = await make_daemon(batch_wait=0.2)  # long enough for both to share a batch
    real_store = pipeline.store_batch

    def store_batch(session: Any, items: list[pipeline.Prepared], now: Any) -> Any:
        if any(i.message_id == "poison@bridge-test.example" and not i.failure for i in items):
            raise RuntimeError("constraint violated")
        return real_store(session, items, now)

    monkeypatch.setattr(group_commit.pipeline, "store_batch", store_batch)
    good, good_id = fresh_copy(real_message(0), "good")
    bad, _ = fresh_copy(real_message(1), "poison")
    outcomes = await asyncio.gather(
        *(
            daemon.deliver(RawMessage(data, Provenance("smtp", "test", "a", f"k{n}")))
            for n, data in enumerate((good, bad))
        )
    )
    assert [o.value for o in outcomes] == ["stored", "quarantined"]
    assert daemon.committer is not None and daemon.committer.batches == 0
    reasons = await daemon.store.read(
        lambda s: s.execute(text("SELECT reason FROM quarantine")).scalars().all()
    )
    assert reasons == ["store-failed"]
    assert [row[0] for row in await stored(daemon)] == [good_id]
