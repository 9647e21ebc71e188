"""`bridge digest preview` and `bridge digest send` as subprocesses, and `kill -9` mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.ingest.files import run_import
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from bridge.store.tables import DigestSend, Outbox, User
from tests.outbound.test_digests import CONFIG, ENRON, LKML, load
from tests.smtp_support import Relay, free_port

AT = "2002-02-02T09:00:00+00:00"  # a Saturday: "Heads up" (Jan 30) is this week's news
PERIOD = "weekly:2002-W05"


class Site:
    """A config file and an imported SQLite store in a temporary directory."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        self.db = tmp_path / "bridge.db"
        self.config = tmp_path / "bridge.toml"
        self.config.write_text(f'[database]\nurl = "sqlite:///{self.db}"\n' + CONFIG + extra)
        self.engine: Engine = make_engine(str(self.db))
        upgrade(self.engine)
        run_import(self.engine, [str(ENRON), str(LKML)], workers=1, rules=load().ruleset)

    def bridge(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", "digest", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=300,
            check=check,
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "bridge", "digest", *args, "--config", str(self.config)]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sends(self) -> list[DigestSend]:
        with Session(self.engine) as session:
            return list(session.execute(select(DigestSend)).scalars())


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path)
    yield made
    made.engine.dispose()


def test_preview_shows_the_digest_and_changes_nothing(site: Site, tmp_path: Path) -> None:
    html = tmp_path / "digest.html"
    done = site.bridge("preview", "--to", "someone.new@enron.com", "--at", AT, "--html", str(html))
    out = done.stdout
    assert "Subject: Digest: 1 active discussion in Trading" in out
    assert "To: someone.new@enron.com" in out
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
    assert "* Heads up" in out and "5 new messages" in out
    page = html.read_text(encoding="utf-8")
    assert '<meta name="color-scheme" content="light dark">' in page and "Heads up" in page
    assert site.sends() == []
    with Session(site.engine) as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0


def test_preview_of_someone_with_nothing_new(site: Site) -> None:
    done = site.bridge("preview", "--to", "nobody@example.net", "--at", AT)
    assert "no digest (empty)" in done.stdout


def test_preview_needs_an_address(site: Site) -> None:
    done = site.bridge("preview", check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == "bridge: error: digest preview needs --to ADDRESS"


def test_send_claims_once_and_delivers_through_the_relay(tmp_path: Path) -> None:
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        site = Site(tmp_path, f'\n[outbound]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n')
        # Digests wait for the send hour: Saturday 06:00 is before 07:00.
        early = site.bridge("send", "--at", "2002-02-02T06:00:00+00:00")
        assert early.stdout.startswith("due 0:")
        first = site.bridge("send", "--now", "--at", AT, "--to", "someone.new@enron.com")
        assert "queued 1" in first.stdout and "delivered 1" in first.stdout
        again = site.bridge("send", "--now", "--at", AT, "--to", "someone.new@enron.com")
        assert again.stdout.startswith("due 0:")
    finally:
        controller.stop()
    assert len(handler.received) == 1
    with Session(site.engine) as session:
        stored = session.execute(select(Outbox.data, Outbox.status)).one()
    assert stored == (handler.received[0], "sent")
    site.engine.dispose()


def test_a_relay_that_drops_the_connection_leaves_the_digest_to_retry(tmp_path: Path) -> None:
    handler = Relay(mode="drop")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        site = Site(tmp_path, f'\n[outbound]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n')
        done = site.bridge("send", "--now", "--at", AT, "--to", "someone.new@enron.com")
        assert "queued 1" in done.stdout and "delivered 0, to retry 1" in done.stdout
        again = site.bridge("send", "--now", "--at", AT, "--to", "someone.new@enron.com")
        assert again.stdout.startswith("due 0:")  # claimed: never enqueued twice
    finally:
        controller.stop()
    assert handler.received == [] and len(handler.attempts) == 1
    with Session(site.engine) as session:
        status, error = session.execute(select(Outbox.status, Outbox.last_error)).one()
    assert status == "pending" and error
    assert [(r.status, r.outbox_id is not None) for r in site.sends()] == [("queued", True)]
    site.engine.dispose()


def test_kill_9_mid_run_then_rerun_gives_everyone_exactly_one(site: Site) -> None:
    readers = [f"reader{i:04d}@enron.com" for i in range(1500)]  # staff: Trading is theirs
    when = datetime(2002, 1, 1, tzinfo=UTC)
    with Session(site.engine) as session, session.begin():
        session.add_all(User(address=a, created_at=when) for a in readers)
    victim = site.start("send", "--now", "--at", AT)
    try:
        while not (claimed := len(site.sends())):
            assert victim.poll() is None, "the run ended before it was killed"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    total = len(site.sends())
    assert claimed <= total < len(readers), "killed in the middle"

    rerun = site.bridge("send", "--now", "--at", AT, check=False)
    assert rerun.returncode in (0, 1), rerun.stderr  # 1: some addresses did not parse
    rows = site.sends()
    per_person = Counter((r.address, r.period) for r in rows)
    assert set(per_person.values()) == {1}
    assert {a for a, _ in per_person} >= set(readers)
    with Session(site.engine) as session:
        recipients = Counter(session.execute(select(Outbox.recipients)).scalars())
    assert set(recipients.values()) == {1}
    queued = {r.address for r in rows if r.status == "queued"}
    assert set(recipients) == queued and set(readers) <= queued
    assert {r.period for r in rows if r.address in readers} == {PERIOD}
