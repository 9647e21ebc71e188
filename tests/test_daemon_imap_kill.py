"""`kill -9` of `bridge run` while it ingests IMAP, on SQLite and PostgreSQL, against Dovecot.

The daemon is killed three times mid-sync, then left to finish. After each
kill, every message the server shows as handled (moved to the archive
folder, or flagged \\Seen) is stored exactly once: the after-action is only
ever done once the batch and its checkpoint are committed. At the end every
message is stored exactly once, and none is left unhandled on the server.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import text

from bridge.store.db import make_engine
from tests.daemon_support import Bridge
from tests.dovecot import Dovecot
from tests.smtp_support import fresh_copy, real_message

ENV = {"BRIDGE_TEST_RUN_ALICE": "alice-pw"}


class UrlBridge(Bridge):
    """`bridge run` on a database given by URL (SQLite or PostgreSQL)."""

    def __init__(self, tmp_path: Path, url: str, extra: str) -> None:
        self.database_url = url
        super().__init__(tmp_path, extra=extra)

    def write_config(self, domains: str) -> None:
        super().write_config(domains)
        config = self.config.read_text(encoding="utf-8")
        config = config.replace(f'url = "sqlite:///{self.db}"', f'url = "{self.database_url}"')
        self.config.write_text(config, encoding="utf-8")


def stored_imap(url: str) -> dict[str, int]:
    """Message-ID -> IMAP deliveries stored."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.message_id, count(d.id) FROM messages m "
                    "JOIN deliveries d ON d.message_pk = m.id "
                    "WHERE d.source = 'imap' GROUP BY m.message_id"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(mid): int(n) for mid, n in rows}


def handled_on_server(server: Dovecot, action: str) -> set[str]:
    """Message-IDs the server shows as done: in the archive folder, or \\Seen in INBOX."""
    folder, criteria = ("Bridged", ["ALL"]) if action == "move" else ("INBOX", ["SEEN"])
    return _ids(server, folder, criteria)


def left_on_server(server: Dovecot, action: str) -> set[str]:
    return _ids(server, "INBOX", ["ALL"] if action == "move" else ["UNSEEN"])


def _ids(server: Dovecot, folder: str, criteria: list[str]) -> set[str]:
    return server.message_ids("alice", "alice-pw", folder, criteria)


@pytest.mark.parametrize("action", ["move", "seen"])
def test_kill_9_during_imap_ingest_loses_nothing_and_doubles_nothing(
    dovecot: Dovecot, database_url: str, tmp_path: Path, action: str
) -> None:
    sent = [fresh_copy(real_message(i), f"imap-kill-{action}-{i}")[1] for i in range(240)]
    with IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=10) as imap:
        imap.login("alice", "alice-pw")
        for i, mid in enumerate(sent):
            imap.append("INBOX", fresh_copy(real_message(i), mid.split("@")[0])[0])
    account = (
        "[[imap.accounts]]\n"
        'name = "alice"\n'
        f'host = "{dovecot.host}"\nport = {dovecot.port}\ntls = "plain"\n'
        'username = "alice"\npassword_env = "BRIDGE_TEST_RUN_ALICE"\n'
        f'after_action = "{action}"\nmove_to = "Bridged"\nbatch_size = 10\n'
        "poll_interval = 0.5\nconnect_timeout = 3.0\nread_timeout = 5.0\n"
    )
    bridge = UrlBridge(tmp_path, database_url, account)
    try:
        for kill_at in (30, 90, 150):
            bridge.start(ENV)
            deadline = time.monotonic() + 60
            while len(stored_imap(database_url)) < kill_at and time.monotonic() < deadline:
                time.sleep(0.02)
            bridge.signal(signal.SIGKILL)
            bridge.wait(10)
            stored = stored_imap(database_url)
            assert kill_at <= len(stored) < len(sent), "the kill did not land mid-sync"
            assert set(stored.values()) == {1}, "a message stored twice"
            handled = handled_on_server(dovecot, action)
            assert handled - set(stored) == set(), "handled on the server but not stored"
        bridge.start(ENV)  # resumes from the checkpoint, finishes the after-actions
        deadline = time.monotonic() + 90
        while left_on_server(dovecot, action) and time.monotonic() < deadline:
            time.sleep(0.2)
        bridge.signal(signal.SIGTERM)
        assert bridge.wait(15) == 0
    finally:
        bridge.stop()
    assert left_on_server(dovecot, action) == set()
    assert handled_on_server(dovecot, action) == set(sent)
    stored = stored_imap(database_url)
    assert {mid: stored.get(mid) for mid in sent} == {mid: 1 for mid in sent}
