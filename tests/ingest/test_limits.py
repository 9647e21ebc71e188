"""`[limits]` holds on every path a message comes in by: SMTP, `bridge import`, retries, rule tests.

A 500-part message and a 40-deep one, built with the standard library, are
fed with `max_mime_parts = 100` and `max_mime_depth = 20`: each path must
quarantine both with the reason `bridge rules test` gives, never store them.
A message within the limits still goes through, so the limits are not simply
refusing everything.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from sqlalchemy import text

from bridge.cli import main
from bridge.config import parse_config
from bridge.daemon import Daemon
from bridge.store.db import make_engine

LIMITS = {"max_mime_parts": 100, "max_mime_depth": 20}


def wide(parts: int = 500) -> bytes:
    outer = MIMEMultipart("mixed")
    for n in range(parts - 1):
        outer.attach(MIMEText(f"part {n}\n"))
    return headers(outer, "wide")


def deep(depth: int = 40) -> bytes:
    inner: MIMEMultipart | MIMEText = MIMEText("the bottom\n")
    for _ in range(depth):
        outer = MIMEMultipart("mixed")
        outer.attach(inner)
        inner = outer
    return headers(inner, "deep")


def small() -> bytes:
    message = EmailMessage()
    message.set_content("within every limit\n")
    return headers(message, "small")


def headers(message: MIMEMultipart | MIMEText | EmailMessage, tag: str) -> bytes:
    message["Message-ID"] = f"<{tag}@limits.example>"
    message["From"] = "sender@example.com"
    message["To"] = "alice@example.com"
    message["Subject"] = f"limits {tag}"
    message["Date"] = "Mon, 2 Mar 2026 10:00:00 +0000"
    return message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def outcome(db: Path) -> tuple[list[str], list[str]]:
    """The subjects stored, and the reasons of the copies held in quarantine."""
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT subject FROM messages")).scalars().all()
        held = conn.execute(
            text("SELECT reason FROM quarantine WHERE released_at IS NULL")
        ).scalars()
        found = sorted(stored), sorted(held)
    engine.dispose()
    return found


# The small message stored; the wide and the deep one held for their limit.
EXPECTED = (["limits small"], ["too-deep", "too-many-parts"])


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text("[limits]\nmax_mime_parts = 100\nmax_mime_depth = 20\n")
    return path


def test_rules_test_names_the_limit(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for tag, data in (("wide", wide()), ("deep", deep())):
        eml = tmp_path / f"{tag}.eml"
        eml.write_bytes(data)
        main(["rules", "test", str(eml), "--config", str(config_file)])
        reason = {"wide": "too-many-parts", "deep": "too-deep"}[tag]
        assert reason in capsys.readouterr().out


def test_import_quarantines_beyond_the_limits_and_retry_keeps_them(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    for tag, data in (("wide", wide()), ("deep", deep()), ("small", small())):
        (folder / f"{tag}.eml").write_bytes(data)
    db = tmp_path / "bridge.db"
    common = ["--db", f"sqlite:///{db}", "--config", str(config_file)]
    assert main(["import", str(folder), "--quiet", *common]) == 0
    assert outcome(db) == EXPECTED

    assert main(["quarantine", "retry", "--all", *common]) == 0
    capsys.readouterr()
    assert outcome(db) == EXPECTED


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {"domains": ["example.com"], "listeners": [{"port": 0}]},
        "web": {"port": 0},
        "limits": LIMITS,
    }
    running = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await running.start()
    yield running
    await running.stop()


async def test_smtp_quarantines_beyond_the_limits(daemon: Daemon, tmp_path: Path) -> None:
    smtp_port = next(b.port for b in daemon.smtp_bound if b.protocol == "smtp")

    def send(data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail("sender@example.com", ["alice@example.com"], data)

    for data in (wide(), deep(), small()):
        await asyncio.to_thread(send, data)
    assert outcome(tmp_path / "bridge.db") == EXPECTED
