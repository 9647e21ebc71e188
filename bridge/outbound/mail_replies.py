"""A reply mailed to a digest's reply address, sent on as the person's reply-all.

Two steps, so the one writer does only the store's part:

- `read_reply` (any thread, no store): machine-written mail (a bounce, an
  auto-reply, bulk) is `Dropped`; the header From must be exactly the
  envelope sender (already checked against the token at RCPT); the new text
  is what the person wrote above the quoted digest (`core/body/quotes.py`), and
  files attached to the mail are carried on.
- `send_mail_reply` (in the writer's transaction): `replies.send_reply`, as
  the viewer's reply, for the Viewer of that address (so it is refused,
  with nothing stored or sent, when they may no longer see the message).

The mail received is not stored: what is stored (and queued, in the same
transaction, before the client gets its 250) is the reply Bridge sends.
"""

from __future__ import annotations

import email
from dataclasses import dataclass
from datetime import datetime
from email.message import Message as StdMessage
from email.utils import getaddresses

from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.core.access import viewer_for
from bridge.core.admin_rules.loops import automatic
from bridge.core.body.quotes import split_reply
from bridge.core.mail.parse import ParseLimits, parse_message
from bridge.core.outgoing.reply_address import ReplyToken
from bridge.errors import ParseError
from bridge.i18n import zone
from bridge.outbound.compose import Attachment
from bridge.outbound.replies import ReplyRefused, Sent, send_reply
from bridge.store.tables import User

FROM_MISMATCH = "The From header must be the address the digest was sent to."


@dataclass(frozen=True, slots=True)
class MailReply:
    """What a person mailed to a reply address: their new words and their files."""

    text: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Dropped:
    """Mail to a reply address that is accepted and never sent on, and why."""

    reason: str


def read_reply(data: bytes, sender: str, limits: ParseLimits) -> MailReply | Dropped:
    """The reply in `data`, mailed by `sender`; ReplyRefused (403) when From is not them."""
    try:
        parsed = parse_message(data, limits)
    except ParseError as exc:
        raise ReplyRefused(f"The mail cannot be read ({exc.reason}).") from None
    why = automatic(parsed)
    if why is not None:
        return Dropped(why)
    message = email.message_from_bytes(data)
    authors = [a.strip().lower() for _n, a in getaddresses(message.get_all("From", []))]
    if authors != [sender.strip().lower()]:
        raise ReplyRefused(FROM_MISMATCH, 403)
    text = split_reply(parsed.text.replace("\r\n", "\n")).new_text.strip("\n")
    return MailReply(text, _attachments(message))


def _attachments(message: StdMessage) -> tuple[Attachment, ...]:
    """Files attached to the mail (`Content-Disposition: attachment`); inline images stay."""
    found = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() != "attachment":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            name = part.get_filename() or "attachment"
            found.append(Attachment(name, part.get_content_type(), payload))
    return tuple(found)


def send_mail_reply(
    session: Session,
    config: Config,
    *,
    token: ReplyToken,
    sender: str,
    reply: MailReply,
    now: datetime,
) -> Sent:
    """Send `reply` as `sender`'s reply-all to the token's message, in the caller's transaction."""
    address = sender.strip().lower()
    viewer = viewer_for(address, config.spaces, config.staff_domains)
    user = session.get(User, address)
    language = (user.language if user else "") or config.web.default_language
    tz = zone((user.timezone if user else "") or "", config.web.default_timezone)
    return send_reply(
        session,
        config,
        viewer,
        parent_pk=token.message_pk,
        text=reply.text,
        mode="all",
        attachments=reply.attachments,
        language=language,
        tz=tz,
        now=now,
    )
