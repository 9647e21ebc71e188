"""`bridge run` as a subprocess: start, serve, reload, stop on signals, survive kill -9."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.store.db import make_engine
from tests.daemon_support import Bridge
from tests.dovecot import Dovecot
from tests.smtp_support import free_port, fresh_copy, real_message

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "bridge.service"


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    running = Bridge(tmp_path)
    yield running
    running.stop()


def deliveries_by_id(db: Path) -> dict[str, int]:
    engine = make_engine(str(db))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.message_id, count(d.id) FROM messages m "
                    "JOIN deliveries d ON d.message_pk = m.id GROUP BY m.message_id"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(mid): int(n) for mid, n in rows}


def test_run_serves_and_stops_on_sigterm_within_10_s(bridge: Bridge) -> None:
    bridge.start()
    data, mid = fresh_copy(real_message(0), "smoke")
    bridge.send(data)
    health = bridge.health()
    assert health["database"] == "ok"
    # An idle session is open while SIGTERM arrives: it gets 421, the process exits 0.
    with smtplib.SMTP("127.0.0.1", bridge.smtp_port, timeout=10) as idle:
        idle.ehlo()
        started = time.monotonic()
        bridge.signal(signal.SIGTERM)
        assert bridge.wait(10) == 0
        assert time.monotonic() - started < 10
        code, message = idle.noop()  # the 421 the drain sent before closing
        assert code == 421 and message.startswith(b"4.3.2")
    assert deliveries_by_id(bridge.db) == {mid: 1}
    log = bridge.log.read_text()
    assert f"<{mid}> smtp stored" in log


def test_sighup_reloads_and_a_bad_config_keeps_the_old_one(bridge: Bridge) -> None:
    bridge.start()
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        bridge.send(real_message(1), "a@new.example")
    bridge.config.write_text("[smtp]\nmax_connections = 'many'\n", encoding="utf-8")
    bridge.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in bridge.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [ln for ln in bridge.log.read_text().splitlines() if "reload refused" in ln]
    assert len(lines) == 1 and "smtp.max_connections" in lines[0] and "'many'" in lines[0]
    assert bridge.health()["status"] == "ok"
    bridge.send(fresh_copy(real_message(1), "after-bad")[0], "b@example.com")
    bridge.write_config('["example.com", "new.example"]')
    bridge.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reloaded" not in bridge.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    bridge.send(fresh_copy(real_message(1), "after-good")[0], "a@new.example")
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(10) == 0


def test_sd_notify_ready_watchdog_stopping(bridge: Bridge, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(20)
        bridge.start({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
        seen: list[str] = []
        while not any(m.startswith("WATCHDOG=1") for m in seen):
            seen.append(sock.recv(4096).decode())
        assert seen[0].startswith("READY=1")
        bridge.signal(signal.SIGTERM)
        while "STOPPING=1" not in seen:
            seen.append(sock.recv(4096).decode())
        assert bridge.wait(10) == 0


@pytest.mark.parametrize("protocol", ["smtp", "lmtp"])
def test_kill_9_during_delivery_loses_no_acknowledged_message(
    tmp_path: Path, protocol: str
) -> None:
    lmtp_port = free_port()
    bridge = Bridge(
        tmp_path,
        extra=f'[[smtp.listeners]]\nhost = "127.0.0.1"\nport = {lmtp_port}\nprotocol = "lmtp"\n',
    )
    bridge.start()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def connect() -> smtplib.SMTP:
        if protocol == "lmtp":
            return smtplib.LMTP("127.0.0.1", lmtp_port, timeout=10)
        return smtplib.SMTP("127.0.0.1", bridge.smtp_port, timeout=10)

    def client(number: int) -> None:
        try:
            with connect() as smtp:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    data, mid = fresh_copy(real_message(i), f"crash-{number}-{i}")
                    smtp.sendmail("sender@enron.com", ["alice@example.com"], data)
                    with lock:
                        acked.append(mid)
        except (OSError, smtplib.SMTPException):
            return  # the server died under us: what was not acknowledged may be lost

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    bridge.signal(signal.SIGKILL)
    bridge.wait(10)
    stop.set()
    for t in threads:
        t.join(15)
    assert len(acked) >= 200
    bridge.start()  # recovers the database, and serves again
    data, mid = fresh_copy(real_message(0), "after-crash")
    bridge.send(data)
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(10) == 0
    stored = deliveries_by_id(bridge.db)
    assert {m: stored.get(m) for m in acked} == {m: 1 for m in acked}
    assert stored[mid] == 1
    bridge.stop()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's `bridge`.
    executable = Path(sys.executable).parent / "bridge"
    assert executable.exists()
    unit = tmp_path / "bridge.service"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace("/opt/bridge/.venv/bin/bridge", str(executable)),
        encoding="utf-8",
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    complaints = [ln for ln in result.stderr.splitlines() if "bridge.service" in ln]
    assert result.returncode == 0 and complaints == [], result.stderr
    text_ = UNIT.read_text(encoding="utf-8")
    for setting in ("Type=notify", "Restart=on-failure", "DynamicUser=yes", "StateDirectory="):
        assert setting in text_
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "WatchdogSec="):
        assert setting in text_


async def test_daemon_runs_imap_accounts_beside_smtp(dovecot: Dovecot, tmp_path: Path) -> None:
    import asyncio

    from imapclient import IMAPClient

    from bridge.config import parse_config
    from bridge.daemon import Daemon

    os.environ["BRIDGE_TEST_DAEMON_IMAP"] = "alice-pw"
    account = {
        "name": "alice",
        "host": dovecot.host,
        "port": dovecot.port,
        "tls": "plain",
        "username": "alice",
        "password_env": "BRIDGE_TEST_DAEMON_IMAP",
        "poll_interval": 0.5,
        "connect_timeout": 3.0,
        "read_timeout": 5.0,
    }
    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {"listeners": [{"port": 0}]},
        "web": {"port": 0},
        "imap": {"accounts": [account]},
    }
    imap_data, imap_id = fresh_copy(real_message(2), "via-imap")
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10) as imap:
        imap.login("alice", "alice-pw")
        imap.append("INBOX", imap_data)
    daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await daemon.start()
    try:
        smtp_data, smtp_id = fresh_copy(real_message(0), "via-smtp")
        port = daemon.smtp_bound[0].port

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.sendmail("s@enron.com", ["a@example.com"], smtp_data)

        await asyncio.to_thread(send)
        for _ in range(200):
            if imap_id in deliveries_by_id(tmp_path / "bridge.db"):
                break
            await asyncio.sleep(0.1)
        health = daemon.health_status()
        assert "imap:alice" in health
        exposition = daemon.metrics.exposition()
        assert b"bridge_imap_lag_seconds" in exposition
        assert b'bridge_imap_up{account="alice"} 1.0' in exposition
        assert b'bridge_messages_total{outcome="stored",source="imap"} 1.0' in exposition
    finally:
        await daemon.stop()
    assert deliveries_by_id(tmp_path / "bridge.db") == {imap_id: 1, smtp_id: 1}


async def test_live_mail_goes_through_the_rules_and_the_scheduler_runs(tmp_path: Path) -> None:
    import asyncio

    from bridge.config import parse_config
    from bridge.daemon import Daemon

    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {"listeners": [{"port": 0}]},
        "web": {"port": 0},
        "bridge": {"message_id_domain": "bridge.example.com"},
        "spaces": [{"slug": "trading", "name": "Trading", "visibility": "staff"}],
        "rules": [
            {
                "name": "team",
                "space": "trading",
                "tags": ["team"],
                "match": {"envelope_to": "team@example.com"},
            }
        ],
    }
    daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await daemon.start()
    try:
        message, mid = fresh_copy(real_message(0), "ruled")
        own = (
            b"Message-ID: <digest-1@bridge.example.com>\r\nFrom: bridge@bridge.example.com\r\n"
            b"To: a@example.com\r\nSubject: Digest\r\n\r\nYour digest.\r\n"
        )
        port = daemon.smtp_bound[0].port

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.sendmail("s@enron.com", ["team@example.com"], message)
                smtp.sendmail("bridge@bridge.example.com", ["a@example.com"], own)

        await asyncio.to_thread(send)
        await daemon.scheduler._maintenance()
        assert daemon.health_status()["scheduler"] == {
            "jobs": ["quarantine-retry", "store-maintenance"],
            "runs": 1,
        }
    finally:
        await daemon.stop()
    engine = make_engine(str(tmp_path / "bridge.db"))
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT space, tags FROM messages WHERE message_id = :m"), {"m": mid}
            ).one()
            skipped = conn.execute(text("SELECT rule, message_id FROM skipped")).all()
            hits = dict(conn.execute(text("SELECT rule, hits FROM rule_hits")).all())
    finally:
        engine.dispose()
    assert tuple(stored) == ("trading", "team")
    assert [tuple(row) for row in skipped] == [("builtin:own-mail", "digest-1@bridge.example.com")]
    assert hits == {"team": 1, "builtin:own-mail": 1}


def _imap_account(server: Dovecot, user: str, **extra: object) -> str:
    lines = [
        "[[imap.accounts]]",
        f'name = "{user}"',
        f'host = "{server.host}"',
        f"port = {server.port}",
        'tls = "plain"',
        f'username = "{user}"',
        f'password_env = "BRIDGE_TEST_RUN_{user.upper()}"',
        "poll_interval = 0.5",
        "connect_timeout = 3.0",
        "read_timeout = 5.0",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def _folder_ids(server: Dovecot, user: str, folder: str) -> set[str]:
    return server.message_ids(user, f"{user}-pw", folder)


def test_kill_9_during_imap_ingest_and_sighup_adds_an_account(
    bridge: Bridge, dovecot: Dovecot
) -> None:
    from imapclient import IMAPClient

    env = {"BRIDGE_TEST_RUN_ALICE": "alice-pw", "BRIDGE_TEST_RUN_BOB": "bob-pw"}
    sent = [fresh_copy(real_message(i), f"imap-crash-{i}") for i in range(300)]
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10) as imap:
        imap.login("alice", "alice-pw")
        for data, _mid in sent:
            imap.append("INBOX", data)
    base = bridge.config.read_text(encoding="utf-8")
    alice = _imap_account(dovecot, "alice", after_action="move", move_to="Bridged", batch_size=10)
    bridge.config.write_text(base + alice, encoding="utf-8")
    bridge.start(env)
    deadline = time.monotonic() + 60
    while len(_folder_ids(dovecot, "alice", "Bridged")) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    bridge.signal(signal.SIGKILL)
    bridge.wait(10)
    moved = _folder_ids(dovecot, "alice", "Bridged")
    assert 30 <= len(moved) < len(sent), "the kill did not land mid-sync"
    stored = deliveries_by_id(bridge.db)
    assert {m: stored.get(m) for m in moved} == {m: 1 for m in moved}

    bridge.start(env)  # resumes from the checkpoint; the rest is moved and stored
    deadline = time.monotonic() + 90
    while _folder_ids(dovecot, "alice", "INBOX") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _folder_ids(dovecot, "alice", "INBOX") == set()

    # SIGHUP with a second account: its worker starts without a restart.
    bob_data, bob_id = fresh_copy(real_message(1), "bob-after-reload")
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10) as imap:
        imap.login("bob", "bob-pw")
        imap.append("INBOX", bob_data)
    bridge.config.write_text(base + alice + _imap_account(dovecot, "bob"), encoding="utf-8")
    bridge.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while bob_id not in deliveries_by_id(bridge.db) and time.monotonic() < deadline:
        time.sleep(0.2)
    health = bridge.health()
    bridge.signal(signal.SIGTERM)
    assert bridge.wait(10) == 0
    stored = deliveries_by_id(bridge.db)
    assert {mid: stored.get(mid) for _data, mid in sent} == {mid: 1 for _data, mid in sent}
    assert stored[bob_id] == 1
    assert "imap:bob" in json.dumps(health)
