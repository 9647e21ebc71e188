"""SMTP ingest with aiosmtpd: receive, wrap in a RawMessage, hand to the pipeline, reply.

The reply codes are named; `250` is sent only once the message's raw bytes
are committed to the store.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.core.message import Provenance, RawMessage

log = logging.getLogger(__name__)

OK = "250 2.0.0 Message accepted"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
NO_SUCH_USER = "550 5.1.1 No such recipient here"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"

Deliver = Callable[[RawMessage], Awaitable[object]]


class BridgeHandler:
    """aiosmtpd handler: accepts mail for the configured domains and stores it."""

    def __init__(self, deliver: Deliver, domains: tuple[str, ...], listener: str) -> None:
        self.deliver = deliver
        self.domains = tuple(d.lower() for d in domains)
        self.listener = listener
        self.accepted = 0

    def accepts(self, address: str) -> bool:
        if not self.domains:
            return True
        domain = address.rpartition("@")[2].lower()
        return address.lower() in self.domains or domain in self.domains

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.accepts(address):
            return NO_SUCH_USER
        envelope.rcpt_tos.append(address)
        return RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data: Any = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        self.accepted += 1
        key = f"smtp:{uuid.uuid4().hex}"  # a queue id: each accepted copy is its own delivery
        raw = RawMessage(
            data,
            Provenance(
                "smtp",
                self.listener,
                ",".join(envelope.rcpt_tos),
                key,
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
            ),
        )
        try:
            await self.deliver(raw)
        except Exception:
            log.exception("SMTP delivery from %s failed", peer)
            return TEMPORARY_FAILURE
        return OK
