"""Shared by the tests of the reader's marks (unread, follow, mute) and rule tags.

Enron's maildir and the lkml RapidIO thread under the access tests' spaces
and rules, plus rules that tag: SoCal Gas mail is tagged "Pipeline", and
replies delivered later (`deliver`) are tagged by their subject. `deliver`
stores a reply to the RapidIO thread's root as an SMTP copy would arrive,
through the real pipeline and the same rules.
"""

from __future__ import annotations

import email
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.config import Config
from bridge.core.message import Provenance, RawMessage
from bridge.core.normalize import normalize_message_id
from bridge.store.read.reading import find_thread_id
from bridge.store.tables import Message
from tests.web.support import CONFIG, LKML

ROOT = LKML / "1382298770.004581.eml"
PARTY = "thomas.moll@sysgo.com"  # Cc on the RapidIO thread
OTHER = "someone.else@example.com"  # sent the hidden reply, nothing more
OUTSIDER = "nobody@example.net"

MARKS_CONFIG = (
    CONFIG
    + """
[[rules]]
name = "pipeline"
tags = ["Pipeline"]
[rules.match]
subject = "SoCal"

[[rules]]
name = "visible-news"
tags = ["news"]
[rules.match]
subject = "visible news"

[[rules]]
name = "hush"
tags = ["hush"]
[rules.match]
subject = "hushhush"
"""
)


def root_id() -> str:
    value = normalize_message_id(email.message_from_bytes(ROOT.read_bytes())["Message-ID"])
    assert value
    return value


def root_thread(engine: Engine) -> int:
    with Session(engine) as session:
        return find_thread_id(session, root_id())


def deliver(engine: Engine, config: Config, n: int, to: str, subject: str) -> int:
    """A reply to the RapidIO root, To and delivered to `to` only; its message pk."""
    data = (
        f"From: Alexandre Bounine <alexandre.bounine@idt.com>\r\n"
        f"To: {to}\r\nSubject: Re: RapidIO {subject}\r\n"
        f"Message-ID: <marks-test-{n}@example.com>\r\nIn-Reply-To: <{root_id()}>\r\n"
        f"References: <{root_id()}>\r\nDate: Mon, 21 Oct 2013 12:00:0{n % 10} +0000\r\n\r\n"
        f"Reply number {n}: {subject}.\r\n"
    ).encode()
    raw = RawMessage(data, Provenance("smtp", "test", key=f"marks-{n}", envelope_to=(to,)))
    prepared = pipeline.prepare(raw, rules=config.ruleset)
    outcome = pipeline.store_alone(engine, prepared, datetime.now(UTC), pipeline.Tally())
    assert outcome is pipeline.Outcome.STORED
    with Session(engine) as session:
        pk = session.execute(
            select(Message.id).where(Message.message_id == f"marks-test-{n}@example.com")
        ).scalar_one()
    return int(pk)
