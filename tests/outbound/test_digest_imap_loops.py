"""A digest, a sign-in mail and an auto-reply to a digest, back through a real Dovecot.

A mailbox the bridge reads over IMAP may well hold the bridge's own mail
(someone's INBOX, a list archive). All three must be kept as skipped copies
under "builtin:own-mail" and never bridged, while ordinary mail in the same
folder is.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.config import parse_config
from bridge.core.admin_rules.loops import OWN_MAIL_RULE
from bridge.core.message import RawMessage
from bridge.ingest.imap import AccountStatus, ImapWorker, SessionStore
from bridge.outbound.compose import compose
from bridge.store.tables import Message, Skipped
from tests.dovecot import Dovecot
from tests.ingest.test_imap import append, make_account, running, synced, wait_for
from tests.outbound.test_digest_loops import BRIDGE, DOMAIN, OOO, OOO_ID, digest, header

T = TypeVar("T")

CONTROL = b"""From: Kam Keiser <kam.keiser@enron.com>
To: Errol McLaughlin <errol.mclaughlin@enron.com>
Subject: Weapon-X tabs
Message-ID: <control.imap.loop@enron.com>
Date: Wed, 30 Jan 2002 18:52:20 -0600

The physical tabs still link to the old book.
"""


def sign_in_mail() -> bytes:
    _message, data = compose(
        from_address=BRIDGE,
        from_name="Bridge",
        to_address="kenneth.lay@enron.com",
        to_name="",
        subject="Your sign-in link for Bridge",
        text="Open this link within 15 minutes to sign in:\n\nhttps://bridge.example.com/login",
        message_id_domain=DOMAIN,
        now=datetime.now(UTC),
    )
    return data


def test_own_mail_read_over_imap_is_kept_not_bridged(
    dovecot: Dovecot, sqlite_engine: Engine
) -> None:
    data, digest_id = digest()
    auto_reply = header(header(header(OOO, "In-Reply-To", digest_id), "To", BRIDGE), *OOO_ID)
    append(dovecot, [data, sign_in_mail(), auto_reply, CONTROL])
    config = parse_config(
        {"bridge": {"message_id_domain": DOMAIN, "address": BRIDGE}}, "bridge.toml"
    )
    rules = config.ruleset

    def prepare(raws: list[RawMessage]) -> list[pipeline.Prepared]:
        return [pipeline.prepare(raw, rules=rules) for raw in raws]

    def read(fn: Callable[[Session], T]) -> T:
        with Session(sqlite_engine) as session:
            return fn(session)

    def write(fn: Callable[[Session], T]) -> T:
        with Session(sqlite_engine) as session, session.begin():
            return fn(session)

    store = SessionStore(read, write, prepare)
    status = AccountStatus("alice")
    with running(ImapWorker(make_account(dovecot), store, status)):
        wait_for(synced(status), what="first sync")
    with Session(sqlite_engine) as session:
        skipped = session.execute(select(Skipped.rule, Skipped.source)).all()
        stored = list(session.scalars(select(Message.message_id)))
        assert session.scalar(select(func.count()).select_from(Message)) == 1
    assert stored == ["control.imap.loop@enron.com"]
    assert skipped == [(OWN_MAIL_RULE, "imap")] * 3
