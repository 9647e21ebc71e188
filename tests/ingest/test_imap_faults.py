"""IMAP faults against a real Dovecot, on both backends: expunged mid-sync, refused logins.

A message listed by SEARCH but expunged (by a person, or another client)
before its body is fetched is skipped: the pass goes on, no error, no
reconnect loop, and the checkpoint moves past it. A refused login waits
longer and longer between attempts (a directory that locks an account after
a few failures must not see them), shows the account in error on `/healthz`
and the admin page with when it tries again, and tries at once when the
password is changed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.core.message import RawMessage
from bridge.ingest.imap import AccountStatus, ImapWorker, SessionStore
from bridge.ingest.imap_status import ERROR, IDLE
from bridge.pipeline import Outcome
from bridge.store.bookkeeping.imap_state import Checkpoint, load_checkpoint
from tests.dovecot import Dovecot
from tests.ingest.test_imap import (
    append,
    client,
    deliveries,
    enron,
    make_account,
    running,
    synced,
    wait_for,
)


def expunge(server: Dovecot, uids: Sequence[int]) -> None:
    """Delete and expunge `uids` from alice's INBOX, from a connection of their own."""
    with client(server) as imap:
        imap.select_folder("INBOX")
        imap.delete_messages(list(uids))
        imap.uid_expunge(list(uids))


class ExpungingStore:
    """A real SessionStore; after its first commit, another client expunges `doomed`."""

    def __init__(self, inner: SessionStore, server: Dovecot, doomed: Sequence[int]) -> None:
        self.inner, self.server, self.doomed = inner, server, doomed
        self.done = False
        self.checkpoints: list[int] = []

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        return self.inner.checkpoint(account, folder)

    def store(self, raws: Sequence[RawMessage], checkpoint: Checkpoint) -> list[Outcome]:
        outcomes = self.inner.store(raws, checkpoint)
        self.checkpoints.append(checkpoint.last_uid)
        if not self.done:
            self.done = True
            expunge(self.server, self.doomed)
        return outcomes


class ExpungingStatus(AccountStatus):
    """A real AccountStatus; once SEARCH has listed the UIDs, another client expunges `doomed`.

    `update_folder` is called right after SEARCH and before any FETCH.
    """

    def __init__(self, name: str, server: Dovecot, doomed: Sequence[int]) -> None:
        super().__init__(name)
        self.server, self.doomed = server, doomed
        self.done = False

    def update_folder(self, name: str, **values: Any) -> None:
        super().update_folder(name, **values)
        if not self.done and values.get("pending"):
            self.done = True
            expunge(self.server, self.doomed)


def uids_stored(engine: Engine) -> list[int]:
    return sorted(int(key.rsplit("/", 1)[1]) for key in deliveries(engine))


@pytest.mark.parametrize("when", ["between-batches", "before-any-fetch"])
def test_uids_expunged_mid_sync_are_skipped_and_the_checkpoint_moves_on(
    dovecot: Dovecot, engine: Engine, when: str
) -> None:
    append(dovecot, enron(2)[:20])  # UIDs 1..20, fetched 5 at a time
    # Two inside a later batch, and the whole last batch.
    doomed = [7, 8, 16, 17, 18, 19, 20]
    inner = SessionStore.from_engine(engine)
    if when == "between-batches":
        store: Any = ExpungingStore(inner, dovecot, doomed)
        status = AccountStatus("alice")
    else:
        store = inner
        status = ExpungingStatus("alice", dovecot, doomed)
    with running(ImapWorker(make_account(dovecot), store, status, backoff_max=0.2)):
        wait_for(synced(status), what="a pass over INBOX")
        assert status.state == IDLE
    assert status.reconnects == 0 and status.last_error is None, status.last_error
    kept = [uid for uid in range(1, 21) if uid not in doomed]
    assert uids_stored(engine) == kept
    with Session(engine) as session:
        saved = load_checkpoint(session, "alice", "INBOX")
    assert saved is not None and saved.last_uid == 20
    assert status.folders["INBOX"].pending == 0
    if isinstance(store, ExpungingStore):
        assert store.checkpoints == [5, 10, 15, 20]

    # The next pass fetches nothing again; new mail after the gap is stored.
    append(dovecot, enron(2)[20:21])
    again = AccountStatus("alice")
    with running(ImapWorker(make_account(dovecot), inner, again)):
        wait_for(synced(again), what="a second pass")
    assert uids_stored(engine) == [*kept, 21]
    assert again.folders["INBOX"].stored == 1


def failed_logins(server: Dovecot) -> int:
    """Refused logins of alice in the server's own log."""
    return len(re.findall(r"auth failed.*user=<alice>", server.log()))


def test_a_refused_login_backs_off_shows_why_and_retries_a_new_password_at_once(
    dovecot: Dovecot, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.ingest.imap_worker")
    append(dovecot, enron(2)[:4])
    secret = tmp_path / "alice.password"
    secret.write_text("not-the-password\n", encoding="utf-8")
    # Dovecot answers a refused login after 2 s, and later ones from the same
    # address later still (its auth penalty): the read timeout leaves room.
    account = replace(
        make_account(dovecot), password_env="", password_file=str(secret), read_timeout=30
    )
    status = AccountStatus("alice")
    # Other failures retry within 0.2 s; a refused login waits 1, 2, 4, 5, 5 ... s.
    worker = ImapWorker(
        account, SessionStore.from_engine(engine), status, 0.2, login_backoff=(1.0, 5.0)
    )
    waits: list[float] = []
    with running(worker):
        started = time.monotonic()
        while len(waits) < 3 and time.monotonic() - started < 60:
            snap = status.snapshot()
            if snap["retry_at"] and snap["failures"] > len(waits):
                at = status.retry_at
                assert at is not None and status.last_error_at is not None
                waits.append(round((at - status.last_error_at).total_seconds(), 1))
            time.sleep(0.02)
        snapshot = status.snapshot()
        # Seen by an admin (/healthz and /admin/imap show this snapshot).
        assert snapshot["state"] == ERROR
        assert snapshot["error_kind"] == "login-refused"
        assert "AUTHENTICATIONFAILED" in (snapshot["last_error"] or "")
        assert snapshot["retry_at"] is not None
        assert failed_logins(dovecot) == 3
        # The next wait is 4 s: a new password is tried within PASSWORD_CHECK.
        secret.write_text("alice-pw\n", encoding="utf-8")
        fixed = time.monotonic()
        wait_for(lambda: "password changed" in caplog.text, timeout=2, what="the new password")
        assert time.monotonic() - fixed < 1.5
        wait_for(lambda: len(deliveries(engine)) == 4, timeout=30, what="stored after the fix")
        wait_for(lambda: status.state == IDLE, what="idle")
    assert waits == [1.0, 2.0, 4.0]
    assert failed_logins(dovecot) == 3
    assert status.failures == 0 and status.error_kind is None and status.retry_at is None
