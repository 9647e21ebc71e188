"""IMAP ingestion against a real Dovecot: no mocks, real sockets, real restarts and kills."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from imapclient import SEEN, IMAPClient
from sqlalchemy import Engine, func, select

from bridge import pipeline
from bridge.config import ImapAccount, parse_config
from bridge.core.message import Provenance, RawMessage
from bridge.errors import ConfigError
from bridge.ingest.imap import (
    AccountStatus,
    ImapStatus,
    ImapWorker,
    SessionStore,
    run_imap,
)
from bridge.ingest.imap_status import ERROR, IDLE
from bridge.ingest.imap_sync import plan_batches
from bridge.pipeline import Outcome
from bridge.store.bookkeeping.imap_state import Checkpoint, load_checkpoint
from bridge.store.tables import Delivery, Message
from tests.conftest import DATA
from tests.dovecot import Dovecot

ENRON = sorted(p for p in (DATA / "enron" / "maildir").rglob("*") if p.is_file())
EXAMPLE = Path(__file__).parent.parent.parent / "bridge.toml.example"


# -- helpers ------------------------------------------------------------------


def make_account(server: Dovecot, user: str = "alice", **changes: object) -> ImapAccount:
    env = f"BRIDGE_TEST_IMAP_{user.upper()}"
    os.environ[env] = f"{user}-pw"
    account = ImapAccount(
        name=user,
        host=server.host,
        port=server.port,
        tls="plain",
        username=user,
        password_env=env,
        batch_size=5,
        poll_interval=0.5,
        connect_timeout=3,
        read_timeout=5,
    )
    return replace(account, **changes)  # type: ignore[arg-type]


def client(server: Dovecot, user: str = "alice") -> IMAPClient:
    imap = IMAPClient(server.host, server.port, ssl=False, timeout=10)
    imap.login(user, f"{user}-pw")
    return imap


def append(server: Dovecot, messages: Sequence[bytes], user: str = "alice") -> None:
    with client(server, user) as imap:
        for data in messages:
            imap.append("INBOX", data)


def enron(copies: int = 1) -> list[bytes]:
    """The Enron test messages; extra copies get their own Message-ID (distinct mail)."""
    out = []
    for n in range(copies):
        for i, path in enumerate(ENRON):
            data = path.read_bytes()
            if n and b"Message-ID: <" in data:
                data = data.replace(b"Message-ID: <", f"Message-ID: <copy{n}.".encode(), 1)
            elif n:  # headers cut upstream: give the copy an identity of its own
                data = f"Message-ID: <copy{n}.{i}@bridge.test>\n".encode() + data
            if n:  # a different body too, so the content hash does not merge the copies
                data += f"\n(copy {n})\n".encode()
            out.append(data)
    return out


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


@contextmanager
def running(worker: ImapWorker) -> Iterator[ImapWorker]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        worker.interrupt()
        thread.join(timeout=15)
        assert not thread.is_alive()


def deliveries(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Delivery.key).where(Delivery.source == "imap")))


def message_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Message)) or 0)


def synced(status: AccountStatus) -> Callable[[], bool]:
    start = status.last_sync

    def check() -> bool:
        return status.last_sync is not None and status.last_sync != start

    return check


class WatchingStore:
    """A real SessionStore that, before each commit, looks at the server's side of the batch."""

    def __init__(self, inner: SessionStore, server: Dovecot) -> None:
        self.inner = inner
        self.server = server
        self.seen_early: list[int] = []
        self.batches = 0

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        return self.inner.checkpoint(account, folder)

    def store(self, raws: Sequence[RawMessage], checkpoint: Checkpoint) -> list[Outcome]:
        uids = [int(raw.provenance.key.rsplit("/", 1)[1]) for raw in raws]
        with client(self.server) as imap:
            imap.select_folder("INBOX", readonly=True)
            flags = imap.get_flags(uids)
            for uid in uids:  # still in INBOX, and not \Seen: nothing acted before the commit
                if uid not in flags or SEEN in flags[uid]:
                    self.seen_early.append(uid)
        self.batches += 1
        return self.inner.store(raws, checkpoint)


# -- config -----------------------------------------------------------------


def example_account_block() -> dict:
    """The commented `[[imap.accounts]]` example of bridge.toml.example, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[imap.accounts]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    return tomllib.loads("\n".join(block))


def test_example_documents_every_account_key() -> None:
    data = example_account_block()
    (account,) = data["imap"]["accounts"]
    assert set(account) == set(ImapAccount.__dataclass_fields__)
    config = parse_config(data, "example")
    assert config.imap.accounts[0].name == account["name"]


def test_inline_password_and_plain_on_the_network_are_refused() -> None:
    base = {"name": "a", "host": "127.0.0.1", "tls": "plain", "username": "u"}
    with pytest.raises(ConfigError, match=r"imap.accounts\[0\].password: .*password_env"):
        parse_config({"imap": {"accounts": [{**base, "password": "hunter2"}]}}, "b.toml")
    remote = {**base, "host": "mail.example.com", "password_env": "X"}
    with pytest.raises(ConfigError, match=r"imap.accounts\[0\].tls: plain"):
        parse_config({"imap": {"accounts": [remote]}}, "b.toml")
    with pytest.raises(ConfigError, match=r"imap.accounts\[0\].password_env"):
        parse_config({"imap": {"accounts": [base]}}, "b.toml")
    moving = {**base, "password_env": "X", "after_action": "move"}
    with pytest.raises(ConfigError, match=r"imap.accounts\[0\].move_to"):
        parse_config({"imap": {"accounts": [moving]}}, "b.toml")


def test_batches_respect_count_and_bytes() -> None:
    uids = list(range(1, 12))
    assert [len(b) for b in plan_batches(uids, {}, 5)] == [5, 5, 1]
    big = {3: 40 * 1024 * 1024}
    assert plan_batches(uids[:5], big, 100) == [[1, 2], [3], [4, 5]]


# -- against Dovecot ---------------------------------------------------------


def test_sync_stores_every_message_once_and_a_second_run_nothing(
    dovecot: Dovecot,
    sqlite_engine: Engine,
) -> None:
    messages = enron()
    append(dovecot, messages)
    store = SessionStore.from_engine(sqlite_engine)
    status = AccountStatus("alice")
    with running(ImapWorker(make_account(dovecot), store, status)):
        wait_for(synced(status), what="first sync")
    keys = deliveries(sqlite_engine)
    assert len(keys) == len(messages) == len(set(keys))
    stored = message_count(sqlite_engine)
    assert stored > 0
    assert status.folders["INBOX"].stored == len(messages)
    assert status.lag_messages == 0

    again = AccountStatus("alice")
    with running(ImapWorker(make_account(dovecot), store, again)):
        wait_for(synced(again), what="second sync")
    assert sorted(deliveries(sqlite_engine)) == sorted(keys)
    assert message_count(sqlite_engine) == stored
    assert again.folders["INBOX"].stored == 0


@pytest.mark.parametrize("action", ["seen", "move"])
def test_after_action_happens_only_once_stored(
    dovecot: Dovecot,
    sqlite_engine: Engine,
    action: str,
) -> None:
    messages = enron()
    append(dovecot, messages)
    store = WatchingStore(SessionStore.from_engine(sqlite_engine), dovecot)
    status = AccountStatus("alice")
    account = make_account(dovecot, after_action=action, move_to="Archive")
    with running(ImapWorker(account, store, status)):
        wait_for(synced(status), what="sync")
    assert store.batches >= len(messages) // 5
    assert store.seen_early == []
    assert len(deliveries(sqlite_engine)) == len(messages)
    with client(dovecot) as imap:
        inbox = imap.select_folder("INBOX")
        if action == "seen":
            assert inbox[b"EXISTS"] == len(messages)
            assert imap.search(["UNSEEN"]) == []
        else:
            assert inbox[b"EXISTS"] == 0
            assert imap.select_folder("Archive")[b"EXISTS"] == len(messages)


def test_uidvalidity_change_rescans_without_duplicates(
    dovecot: Dovecot,
    sqlite_engine: Engine,
) -> None:
    messages = enron()
    append(dovecot, messages)
    store = SessionStore.from_engine(sqlite_engine)
    status = AccountStatus("alice")
    with running(ImapWorker(make_account(dovecot), store, status)):
        wait_for(synced(status), what="first sync")
    with sqlite_engine.connect() as conn:
        from sqlalchemy.orm import Session

        before = load_checkpoint(Session(bind=conn), "alice", "INBOX")
    assert before is not None and before.last_uid == len(messages)
    stored = message_count(sqlite_engine)

    dovecot.doveadm(
        "mailbox", "update", "-u", "alice", "--uid-validity", str(before.uidvalidity + 7), "INBOX"
    )
    new = enron(2)[-1]
    append(dovecot, [new])
    status = AccountStatus("alice")
    with running(ImapWorker(make_account(dovecot), store, status)):
        wait_for(synced(status), what="rescan")
    assert status.folders["INBOX"].uidvalidity == before.uidvalidity + 7
    keys = deliveries(sqlite_engine)
    assert len(keys) == len(messages) + 1  # the old copies, plus only the new message
    assert message_count(sqlite_engine) == stored + 1
    assert sum(f"/{before.uidvalidity + 7}/" in key for key in keys) == 1


def test_dovecot_restarted_during_idle_then_new_mail_is_stored(
    dovecot: Dovecot,
    sqlite_engine: Engine,
) -> None:
    append(dovecot, enron()[:3])
    status = AccountStatus("alice")
    worker = ImapWorker(make_account(dovecot), SessionStore.from_engine(sqlite_engine), status)
    with running(worker):
        wait_for(lambda: status.state == IDLE, what="IDLE")
        dovecot.restart()
        wait_for(lambda: status.reconnects >= 1, what="the disconnect to be noticed")
        append(dovecot, enron(2)[-2:])
        wait_for(lambda: len(deliveries(sqlite_engine)) == 5, what="mail after the restart")
        wait_for(lambda: status.state == IDLE, what="IDLE again")
    assert len(set(deliveries(sqlite_engine))) == 5


def test_hung_server_times_out_and_is_retried(sqlite_engine: Engine) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept_and_say_nothing() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    os.environ["BRIDGE_TEST_IMAP_HUNG"] = "x"
    account = ImapAccount(
        name="hung",
        host="127.0.0.1",
        port=listener.getsockname()[1],
        tls="plain",
        username="x",
        password_env="BRIDGE_TEST_IMAP_HUNG",
        connect_timeout=1,
        read_timeout=0.5,
    )
    status = AccountStatus("hung")
    worker = ImapWorker(account, SessionStore.from_engine(sqlite_engine), status, backoff_max=0.5)
    try:
        with running(worker):
            wait_for(lambda: status.reconnects >= 2, timeout=15, what="two timeouts")
        assert status.state != IDLE
        assert status.last_error is not None and "timed out" in status.last_error.lower()
        assert len(accepted) >= 2
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_wrong_password_fails_one_account_only(
    dovecot: Dovecot,
    sqlite_engine: Engine,
) -> None:
    append(dovecot, enron()[:4], user="bob")
    alice = make_account(dovecot, "alice")
    os.environ["BRIDGE_TEST_IMAP_WRONG"] = "not-the-password"
    alice = replace(alice, password_env="BRIDGE_TEST_IMAP_WRONG")
    bob = make_account(dovecot, "bob")
    parsed = parse_config({"imap": {"backoff_max": 1}}, "t.toml").imap
    config = replace(parsed, accounts=(alice, bob))
    status = ImapStatus()
    store = SessionStore.from_engine(sqlite_engine)

    async def scenario() -> dict:
        stop = asyncio.Event()
        task = asyncio.create_task(run_imap(config, store, status, stop))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if status.account("alice").reconnects and len(deliveries(sqlite_engine)) == 4:
                break
            await asyncio.sleep(0.1)
        snapshot = status.snapshot()
        stop.set()
        await asyncio.wait_for(task, 15)
        return snapshot

    snapshot = asyncio.run(scenario())
    assert snapshot["alice"]["state"] == ERROR
    # Dovecot delays a failed login, so a later attempt may time out instead.
    assert "LoginError" in (snapshot["alice"]["last_error"] or "")
    assert snapshot["bob"]["state"] == IDLE
    assert snapshot["bob"]["folders"]["INBOX"]["stored"] == 4
    assert status.snapshot()["alice"]["state"] == "stopped"
    assert len(deliveries(sqlite_engine)) == 4
    assert status.snapshot()["alice"]["connected"] is False


def test_error_state_is_reported_while_retrying(
    dovecot: Dovecot,
    sqlite_engine: Engine,
) -> None:
    account = replace(make_account(dovecot), password_env="BRIDGE_TEST_IMAP_UNSET_VARIABLE")
    os.environ.pop("BRIDGE_TEST_IMAP_UNSET_VARIABLE", None)
    status = AccountStatus("alice")
    with running(ImapWorker(account, SessionStore.from_engine(sqlite_engine), status, 0.2)):
        wait_for(lambda: status.state == ERROR, what="error state")
    assert "BRIDGE_TEST_IMAP_UNSET_VARIABLE" in (status.last_error or "")


CRASH_WORKER = textwrap.dedent(
    """
    import logging, sys, threading, time
    from bridge.config import ImapAccount
    from bridge.ingest.imap import ImapWorker, SessionStore
    from bridge.store.db import make_engine

    logging.basicConfig(level=logging.INFO)
    db, port = sys.argv[1], int(sys.argv[2])
    engine = make_engine(db, synchronous="FULL")
    store = SessionStore.from_engine(engine)
    inner = store.store

    def slow(raws, checkpoint):
        outcomes = inner(raws, checkpoint)
        time.sleep(0.05)  # widen the window between commit and after-action
        return outcomes

    store.store = slow
    account = ImapAccount(
        name="alice", host="127.0.0.1", port=port, tls="plain", username="alice",
        password_env="BRIDGE_TEST_IMAP_ALICE", after_action=sys.argv[3], move_to="Archive",
        batch_size=4, poll_interval=0.2, connect_timeout=3, read_timeout=5,
    )
    ImapWorker(account, store).run(threading.Event())
    """
)


@pytest.mark.parametrize("action", ["move", "seen"])
def test_sigkill_mid_sync_loses_nothing_and_stores_nothing_twice(
    dovecot: Dovecot,
    tmp_path: Path,
    sqlite_engine: Engine,
    action: str,
) -> None:
    messages = enron(6)
    append(dovecot, messages)
    db = str(tmp_path / "bridge.db")  # the sqlite_engine fixture's migrated file
    make_account(dovecot)  # sets the password variable
    command = [sys.executable, "-c", CRASH_WORKER, db, str(dovecot.port), action]
    root = Path(__file__).parent.parent.parent
    for kill_at in (10, 40, 70):
        proc = subprocess.Popen(command, cwd=root, stderr=subprocess.DEVNULL)
        try:
            wait_for(partial(stored_at_least, sqlite_engine, kill_at), what=f"{kill_at} stored")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert_acted_implies_stored(dovecot, sqlite_engine, action)
    proc = subprocess.Popen(command, cwd=root, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(deliveries(sqlite_engine)) == len(messages), what="all stored")
        wait_for(lambda: not unacted(dovecot, action), what="after-action finished")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    keys = deliveries(sqlite_engine)
    assert len(keys) == len(set(keys)) == len(messages)
    assert_acted_implies_stored(dovecot, sqlite_engine, action)


def stored_at_least(engine: Engine, count: int) -> bool:
    return len(deliveries(engine)) >= count


def unacted(server: Dovecot, action: str) -> list[int]:
    with client(server) as imap:
        imap.select_folder("INBOX", readonly=True)
        return list(imap.search(["UNSEEN"] if action == "seen" else ["ALL"]))


def assert_acted_implies_stored(server: Dovecot, engine: Engine, action: str) -> None:
    """Every message flagged \\Seen or moved on the server is stored, exactly once."""
    with client(server) as imap:
        if action == "move":
            imap.select_folder("Archive", readonly=True)
            uids = imap.search(["ALL"])
        else:
            imap.select_folder("INBOX", readonly=True)
            uids = imap.search(["SEEN"])
        fetched = imap.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    acted = {identity(d[b"BODY[]"]) for d in fetched.values()}
    with engine.connect() as conn:
        from bridge.store.tables import MessageId

        rows = conn.execute(
            select(MessageId.message_id, func.count(Delivery.id))
            .join(Delivery, Delivery.message_pk == MessageId.message_pk)
            .where(Delivery.source == "imap")
            .group_by(MessageId.message_id)
        ).all()
    counts = dict(rows)
    assert [mid for mid in acted if mid not in counts] == []
    assert len(acted) == len(fetched)


def identity(data: bytes) -> str | None:
    return pipeline.prepare(RawMessage(data, Provenance("test", "test"))).message_id


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_and_starttls_with_a_configured_ca(mode: str, sqlite_engine: Engine) -> None:
    with Dovecot(tls=True) as server:
        server.add_user("alice", "alice-pw")
        append(server, enron()[:3])
        port = server.tls_port if mode == "tls" else server.port
        untrusted = make_account(server, tls=mode, port=port)
        refused = ImapStatus()
        store = SessionStore.from_engine(sqlite_engine)
        with running(ImapWorker(untrusted, store, refused.account("alice"))):
            deadline = time.monotonic() + 10
            while not refused.snapshot()["alice"]["last_error"] and time.monotonic() < deadline:
                time.sleep(0.1)
        assert "CERTIFICATE_VERIFY_FAILED" in refused.snapshot()["alice"]["last_error"]
        assert deliveries(sqlite_engine) == []
        account = make_account(server, tls=mode, port=port, ca_file=str(server.cert))
        status = ImapStatus()
        with running(ImapWorker(account, store, status.account(account.name))):
            deadline = time.monotonic() + 30
            while len(deliveries(sqlite_engine)) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
    assert len(deliveries(sqlite_engine)) == 3
    assert status.snapshot()[account.name]["last_error"] is None
