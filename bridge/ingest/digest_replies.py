"""Mail to a digest's reply addresses (`bridge+r.<token>@...`), for the SMTP/LMTP listener.

`DigestReplies` checks a recipient at RCPT (is it a reply address, is the
token ours and not expired, is the envelope sender the person it was made
for) and, after DATA, sends the mail on as that person's reply-all
(`outbound/mail_replies.py`) in one write transaction, so the listener
answers 250 only once the reply is stored and queued. It answers with an
`Answer` (a kind and the reason); `ingest/smtp.py` turns it into a reply code.

- Null sender (`MAIL FROM:<>`, a bounce): accepted at RCPT without looking
  at the token and dropped after DATA. Nobody can be told of a refusal, and
  a 5xx would only make the relaying MTA write a double bounce to its
  postmaster.
- Auto-replies, bounces with a sender, bulk mail: accepted (250) and
  dropped, never answered: a 5xx would send a bounce to an auto-responder,
  which may answer it again.
- A bad, tampered or expired token: refused at RCPT (550 5.1.1); someone
  else's token (the envelope sender is not its person): refused at RCPT
  (550 5.7.1); a From header that is not the envelope sender: refused after
  DATA (550 5.7.1). The sender's MTA bounces the mail to them with the
  reason: they keep their copy, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from bridge.config import Config
from bridge.core.outgoing.reply_address import Refusal, ReplyToken, read_token, token_in
from bridge.outbound.mail_replies import Dropped, MailReply, read_reply, send_mail_reply
from bridge.outbound.replies import ReplyRefused
from bridge.signing import DIGEST_REPLY, Signer
from bridge.store.runner import StoreRunner

log = logging.getLogger(__name__)

Kind = Literal["sent", "dropped", "bad-address", "not-yours", "refused", "too-big", "later"]
_REFUSALS: dict[int, Kind] = {403: "not-yours", 413: "too-big", 429: "later"}
NOT_YOURS = "it was made for another address; reply from your own digest"


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A reply address accepted at RCPT; `token` is None for a bounce (null sender)."""

    token: ReplyToken | None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DigestReplies:
    """Takes mail sent to digest reply addresses: checks it, and sends it on as a reply-all."""

    def __init__(
        self,
        store: StoreRunner,
        config: Callable[[], Config],
        signer: Signer,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self.signer = signer
        self.clock = clock

    def _mac(self, data: bytes) -> bytes:
        return self.signer.mac(DIGEST_REPLY, data)

    def recipient(self, address: str, mail_from: str) -> Accepted | Answer | None:
        """None: not a reply address; Accepted; or the Answer refusing it."""
        base = self.config().bridge.address
        token = token_in(address, base) if base else None
        if token is None:
            return None
        if not mail_from.strip("<> "):  # MAIL FROM:<>, as aiosmtpd gives it
            return Accepted(None)
        found = read_token(self._mac, token, self.clock().date())
        if isinstance(found, Refusal):
            log.info("reply address %s from %s refused: %s", address, mail_from, found.reason)
            return Answer("bad-address", found.reason)
        if not found.belongs_to(mail_from, self._mac):
            log.warning("reply address %s refused: not made for %s", address, mail_from)
            return Answer("not-yours", NOT_YOURS)
        return Accepted(found)

    async def answer(self, accepted: Accepted, mail_from: str, data: bytes) -> Answer:
        """Send the mail on as the person's reply; what to tell the client."""
        if accepted.token is None:
            log.info("bounce to a reply address (null sender) dropped")
            return Answer("dropped", "a bounce")
        config = self.config()
        token = accepted.token
        try:
            read = await asyncio.to_thread(
                read_reply, data, mail_from, config.limits.parse_limits()
            )
            if isinstance(read, Dropped):
                log.info(
                    "mail from %s to reply to message %d dropped: %s",
                    mail_from,
                    token.message_pk,
                    read.reason,
                )
                return Answer("dropped", read.reason)
            reply: MailReply = read
            now = self.clock()
            sent = await self.store.write(
                lambda s: send_mail_reply(
                    s, config, token=token, sender=mail_from, reply=reply, now=now
                )
            )
        except ReplyRefused as refused:
            log.info(
                "reply by mail from %s to message %d refused: %s",
                mail_from,
                token.message_pk,
                refused.reason,
            )
            kind = _REFUSALS.get(refused.status, "refused")
            return Answer(kind, refused.reason)
        log.info(
            "%s: reply by mail from %s to message %d sent",
            sent.message_id,
            mail_from,
            token.message_pk,
        )
        return Answer("sent")
