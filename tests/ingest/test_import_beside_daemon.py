"""`bridge import` into the SQLite store a running daemon is writing to, during SMTP traffic.

The import used to abort with "database is locked" in most runs: a deferred
transaction that had read could not take the write lock once the daemon had
committed (SQLITE_BUSY_SNAPSHOT), and no busy timeout helps then. Writers
now begin IMMEDIATE and a busy batch is tried again. Here a sender keeps the
daemon writing while the import runs three times over real archives: every
import must finish, every acknowledged SMTP message and every imported one
must be in the store once, and no traceback or SQL reaches the terminal.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.config import parse_config
from bridge.daemon import Daemon
from tests.conftest import DATA
from tests.smtp_support import fresh_copy, real_message


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {"domains": ["example.com"], "listeners": [{"port": 0}], "batch_wait": 0.001},
        "web": {"port": 0},
    }
    running = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await running.start()
    yield running
    await running.stop()


def import_copy(tmp_path: Path, n: int) -> tuple[Path, int]:
    """A fresh copy of the test archives (new paths, so each import stores its files)."""
    root = tmp_path / f"archive-{n}"
    shutil.copytree(DATA / "enron" / "maildir", root / "enron")
    for mbox in sorted((DATA / "rlists").glob("*.txt")):
        shutil.copy(mbox, root / mbox.name)
    return root, sum(1 for p in root.rglob("*") if p.is_file())


async def test_import_finishes_beside_a_daemon_taking_smtp_mail(
    daemon: Daemon, tmp_path: Path
) -> None:
    port = next(b.port for b in daemon.smtp_bound if b.protocol == "smtp")
    acknowledged: list[str] = []
    stop = threading.Event()

    def sender() -> None:
        n = 0
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            while not stop.is_set():
                data, mid = fresh_copy(real_message(n), f"beside-{n}")
                client.sendmail("sender@example.com", ["alice@example.com"], data)
                acknowledged.append(mid)
                n += 1

    thread = threading.Thread(target=sender)
    thread.start()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    db = f"sqlite:///{tmp_path}/bridge.db"
    files = 0
    try:
        for n in range(3):
            root, count = import_copy(tmp_path, n)
            files += count
            command = [sys.executable, "-m", "bridge", "import", str(root), "--quiet", "--db", db]
            result = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=300, env=env
            )
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr and "INSERT" not in result.stderr
            assert "quarantined" in result.stdout
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)

    assert len(acknowledged) > 10
    rows = await daemon.store.read(
        lambda s: s.execute(
            text(
                "SELECT m.message_id, count(d.id) FROM messages m "
                "JOIN deliveries d ON d.message_pk = m.id AND d.source = 'smtp' "
                "GROUP BY m.message_id"
            )
        ).all()
    )
    assert {mid: count for mid, count in rows} == {mid: 1 for mid in acknowledged}
    imported = await daemon.store.read(
        lambda s: s.execute(text("SELECT count(*) FROM imported_files")).scalar_one()
    )
    assert imported == files
