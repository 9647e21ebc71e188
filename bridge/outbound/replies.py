"""Mail a person writes in Bridge (a reply, a new discussion): who may send it, what it says.

The reply is built by the one mail builder (`compose.compose_personal`),
queued in the outbox and stored in its thread in the same transaction, as
the replier's own copy (a delivery of source "web"): everyone it was sent to
sees it in the viewer before the relay has answered, and the copy that comes
back later (journaling, an IMAP Sent folder, a recipient's mailbox) has the
same content hash and merges with it. Only someone who may see the parent
can answer it, and the parent's headers are read from the copy that reader
may see (`browse.original_bytes`): a Bcc they were not told of never
becomes a recipient.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import AddressHeader
from email.parser import BytesParser
from email.utils import getaddresses
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.config import Config
from bridge.core.access import Viewer, is_staff
from bridge.core.message import Address, Provenance, RawMessage
from bridge.core.outgoing.reply import (
    ReplyMode,
    ReplyRecipients,
    reply_body,
    reply_recipients,
    reply_references,
    reply_subject,
)
from bridge.errors import AddressError
from bridge.i18n import format_datetime, translator, zone
from bridge.outbound import outbox
from bridge.outbound.compose import Attachment, compose_personal, parse_address
from bridge.store.blobs import Compressor, current_dictionary, unpack_body
from bridge.store.read import browse
from bridge.store.read.correspondents import corresponds_with
from bridge.store.tables import Delivery, Message

SOURCE = "web"  # the delivery source of a message written in the viewer
MINUTE = timedelta(minutes=1)
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+>")  # printable ASCII without <, > or space


class ReplyRefused(Exception):
    """Why a reply is not sent, in words for the person who wrote it; nothing was sent."""

    def __init__(self, reason: str, status: int = 400, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # a sentence people read, translated where shown
        self.status = status
        self.detail = detail  # what it is about (an address), shown as it is


@dataclass(frozen=True, slots=True)
class Parent:
    """What a reply needs of the message it answers, as its reader may see it."""

    pk: int
    thread_id: int
    message_id: str  # as in its header: <id>
    subject: str
    date: datetime | None
    sender: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    references: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    new_text: str

    @property
    def sender_name(self) -> str:
        first = self.sender[0] if self.sender else None
        return (first.name or first.address) if first else ""


@dataclass(frozen=True, slots=True)
class Sent:
    """A reply that is stored and queued."""

    message_id: str
    thread_id: int
    pk: int
    recipients: ReplyRecipients


def load_parent(session: Session, viewer: Viewer, pk: int) -> Parent | None:
    """The message `pk` as `viewer` may see it; None when they may not (or it does not exist)."""
    data = browse.original_bytes(session, viewer, pk)
    if data is None:
        return None
    row = session.get(Message, pk)
    assert row is not None  # original_bytes found it
    head = BytesParser(policy=policy.default).parsebytes(data, headersonly=True)
    message_id = _first_id(str(head.get("Message-ID", "") or ""))
    if message_id is None:  # no usable id: the one the store gave it
        message_id = f"<{row.message_id.split(' ', 1)[0]}>"
    body = unpack_body(session.connection(), row.body, row.raw_sha256)
    return Parent(
        pk=pk,
        thread_id=row.thread_id,
        message_id=message_id,
        subject=str(head.get("Subject", "") or row.subject or ""),
        date=row.date,
        sender=_addresses(head, "From"),
        reply_to=_addresses(head, "Reply-To"),
        to=_addresses(head, "To"),
        cc=_addresses(head, "Cc"),
        references=_ids(head, "References"),
        in_reply_to=_ids(head, "In-Reply-To"),
        new_text=body.new_text,
    )


def _addresses(head: object, name: str) -> tuple[Address, ...]:
    found: list[Address] = []
    for value in head.get_all(name, []) or []:  # type: ignore[attr-defined]
        try:
            pairs = (
                [(a.display_name, a.addr_spec) for a in value.addresses]
                if isinstance(value, AddressHeader)
                else getaddresses([str(value)])
            )
        except Exception:  # a header the email package cannot read: as plain pairs
            pairs = getaddresses([str(value)])
        for display, spec in pairs:
            address = (spec or "").strip().lower()
            if "@" in address:
                found.append(Address(name=(display or "").strip(), address=address))
    return tuple(found)


def _first_id(value: str) -> str | None:
    ids = _id_list(value)
    return ids[0] if ids else None


def _id_list(value: str) -> tuple[str, ...]:
    return tuple(_MESSAGE_ID.findall(value))


def _ids(head: object, name: str) -> tuple[str, ...]:
    values = head.get_all(name, []) or []  # type: ignore[attr-defined]
    return tuple(i for value in values for i in _id_list(str(value)))


def recipients(config: Config, parent: Parent, replier: str, mode: ReplyMode) -> ReplyRecipients:
    """Who the reply goes to: never the replier, the bridge, or anyone the parent Bcc'd.

    Nor an address no mail can be sent to (list archives mangle them:
    "ripley at stats.ox.ac.uk", "r|p|ey@end|ng"): the mail builder would refuse it.
    """
    bridge_address, _domain = config.mail_sender
    own = [bridge_address, config.bridge.address, config.outbound.from_address]
    return reply_recipients(
        mode,
        replier,
        sender=_sendable(parent.sender),
        reply_to=_sendable(parent.reply_to),
        to=_sendable(parent.to),
        cc=_sendable(parent.cc),
        own_addresses=[a for a in own if a],
    )


def _sendable(addresses: tuple[Address, ...]) -> tuple[Address, ...]:
    kept = []
    for item in addresses:
        try:
            parse_address(item.address)
        except AddressError:
            continue
        kept.append(item)
    return tuple(kept)


def attribution(parent: Parent, language: str, tz: ZoneInfo) -> str:
    """ "On <date>, <name> wrote:" in the replier's language and zone."""
    _ = translator(language)
    name = parent.sender_name or _("someone")
    if parent.date is None:
        return _("{name} wrote:").format(name=name)
    when = format_datetime(parent.date, language, tz, "medium")
    return _("On {date}, {name} wrote:").format(date=when, name=name)


def _checked(
    session: Session,
    config: Config,
    viewer: Viewer,
    text: str,
    attachments: Sequence[Attachment],
    now: datetime,
) -> str:
    """The writer's address once the text, files, address and rate pass; else ReplyRefused."""
    web = config.web
    if not text.strip():
        raise ReplyRefused("Write something before sending.")
    if len(text.encode("utf-8", "surrogatepass")) > web.max_reply_bytes:
        raise ReplyRefused("The reply is too long.", 413)
    if sum(len(a.data) for a in attachments) > web.max_upload_bytes:
        raise ReplyRefused("The attached files are too large.", 413)
    writer = viewer.address.strip().lower()
    try:
        parse_address(writer)
    except AddressError:
        raise ReplyRefused("Your address cannot send mail.", 403) from None
    if recent_replies(session, writer, now) >= web.replies_per_minute:
        raise ReplyRefused("Too many replies in a minute. Wait a moment and send again.", 429)
    return writer


def send_reply(
    session: Session,
    config: Config,
    viewer: Viewer,
    *,
    parent_pk: int,
    text: str,
    mode: ReplyMode,
    replier_name: str = "",
    attachments: Sequence[Attachment] = (),
    language: str = "en",
    tz: ZoneInfo | None = None,
    now: datetime,
    in_thread: int | None = None,
) -> Sent:
    """Check, build, store and queue a reply to `parent_pk` in the caller's transaction.

    Raises ReplyRefused (with nothing stored or queued) when the parent is
    not theirs to see (404, as for a message that does not exist) or not in
    `in_thread` when given (a page's thread, or an old id of it), the text
    is empty or too long, the files too heavy, the person over their rate,
    or nobody is left to send it to.
    """
    parent = load_parent(session, viewer, parent_pk)
    if parent is None or (
        in_thread is not None and browse.resolve_thread_id(session, in_thread) != parent.thread_id
    ):
        raise ReplyRefused("No such message.", 404)
    replier = _checked(session, config, viewer, text, attachments, now)
    chosen = recipients(config, parent, replier, mode)
    if not chosen.everyone:
        raise ReplyRefused("Nobody is left to send this reply to.")
    in_reply_to, references = reply_references(
        parent.message_id, parent.references, parent.in_reply_to
    )
    said = attribution(parent, language, tz or zone(config.web.default_timezone))
    return _send(
        session,
        config,
        replier,
        replier_name,
        chosen,
        subject=reply_subject(parent.subject),
        text=reply_body(text, said, parent.new_text),
        in_reply_to=in_reply_to,
        references=references,
        attachments=attachments,
        now=now,
    )


MAX_NEW_RECIPIENTS = 50


def start_discussion(
    session: Session,
    config: Config,
    viewer: Viewer,
    *,
    space: str = "",
    to: Sequence[str] = (),
    subject: str,
    text: str,
    writer_name: str = "",
    attachments: Sequence[Attachment] = (),
    now: datetime,
) -> Sent:
    """Check, build, store and queue a new discussion, in the caller's transaction.

    To a space: to its `address` (the company's list), when the writer
    reads the space (else 404, as for a space that does not exist); the
    discussion is in the space. To people: each an address the writer
    already corresponds with (`store.correspondents`) or a colleague (staff).
    Raises ReplyRefused with nothing stored or queued.
    """
    if space:
        found = next((s for s in config.spaces if s.slug == space), None)
        if found is None or space not in viewer.spaces:
            raise ReplyRefused("No such space.", 404)
        if not found.address:
            raise ReplyRefused("This space has no address to write to.")
        addresses = [found.address]
    else:
        addresses = []
        for value in to:
            address = value.strip().lower()
            if address and address not in addresses:
                addresses.append(address)
    if not subject.strip():
        raise ReplyRefused("Give the discussion a subject.")
    writer = _checked(session, config, viewer, text, attachments, now)
    addresses = [a for a in addresses if a != writer]
    if not addresses:
        raise ReplyRefused("Name at least one person to write to.")
    if len(addresses) > MAX_NEW_RECIPIENTS:
        raise ReplyRefused("Too many people: write to a space's address instead.")
    for address in addresses if not space else ():
        try:
            parse_address(address)
        except AddressError:
            raise ReplyRefused("This is not an email address.", detail=address) from None
        if not is_staff(address, config.staff_domains) and not corresponds_with(
            session, viewer, address
        ):
            raise ReplyRefused(
                "Bridge writes only to colleagues and to people of your discussions.",
                detail=address,
            )
    chosen = ReplyRecipients(tuple(Address(name="", address=a) for a in addresses), ())
    return _send(
        session,
        config,
        writer,
        writer_name,
        chosen,
        subject=subject,
        text=text.replace("\r\n", "\n").strip("\n") + "\n",
        attachments=attachments,
        now=now,
        space=space or None,
    )


def _send(
    session: Session,
    config: Config,
    writer: str,
    writer_name: str,
    chosen: ReplyRecipients,
    *,
    subject: str,
    text: str,
    in_reply_to: str = "",
    references: Sequence[str] = (),
    attachments: Sequence[Attachment],
    now: datetime,
    space: str | None = None,
) -> Sent:
    """Build the mail (From the bridge or the person, by `send_as`), queue it and store it."""
    bridge_address, domain = config.mail_sender
    name = writer_name or _known_name(session, writer)
    reply_to: tuple[tuple[str, str], ...] = ()
    if config.outbound.send_as == "person":
        from_address, from_name = writer, name
    else:
        via = f"{name or writer} via Bridge"
        from_address, from_name, reply_to = bridge_address, via, ((writer, name),)
    message, data = compose_personal(
        from_address=from_address,
        from_name=from_name,
        reply_to=reply_to,
        to=[(a.address, a.name) for a in chosen.to],
        cc=[(a.address, a.name) for a in chosen.cc],
        subject=subject,
        text=text,
        in_reply_to=in_reply_to,
        references=references,
        attachments=attachments,
        message_id_domain=domain,
        now=now,
    )
    message_id = str(message["Message-ID"])
    outbox.enqueue(session, data, recipients=[a.address for a in chosen.everyone], now=now)
    pk, thread_id = store_own_copy(session, config, data, message_id, writer, now, space)
    return Sent(message_id, thread_id, pk, chosen)


def store_own_copy(
    session: Session,
    config: Config,
    data: bytes,
    message_id: str,
    sender: str,
    now: datetime,
    space: str | None = None,
) -> tuple[int, int]:
    """Store mail a person wrote in Bridge as their copy; (message pk, thread id).

    It takes the one path every message takes (`pipeline`), with the rules,
    so a space whose rule matches the reply holds it too. A discussion
    started in `space` is in it whatever the rules say of its copy.
    """
    raw = RawMessage(
        data,
        Provenance(
            source=SOURCE,
            location="viewer",
            mailbox=sender,
            key=message_id,
            envelope_from=sender,
            envelope_to=(sender,),
        ),
    )
    compressor = Compressor(current_dictionary(session.connection()))
    item = pipeline.prepare(raw, compressor, config.limits.parse_limits(), config.ruleset)
    if space is not None and item.decision.space is None:
        item = replace(item, decision=replace(item.decision, space=space))
    outcome = pipeline.store_batch(session, [item], now)[0]
    if outcome not in (pipeline.Outcome.STORED, pipeline.Outcome.MERGED):
        # Never queue mail the store would not show: the transaction is rolled back.
        raise RuntimeError(f"{message_id}: the reply was not stored ({outcome.value})")
    stored = item.message_id or message_id.strip("<>")
    row = session.execute(
        select(Message.id, Message.thread_id).where(Message.message_id == stored)
    ).one()
    return int(row.id), int(row.thread_id)


def recent_replies(session: Session, address: str, now: datetime) -> int:
    """How many messages `address` wrote in Bridge in the last minute."""
    query = select(func.count()).where(
        Delivery.source == SOURCE,
        Delivery.envelope_from == address,
        Delivery.received_at > now - MINUTE,
    )
    return int(session.execute(query).scalar_one())


def _known_name(session: Session, address: str) -> str:
    return browse.display_names(session, [address]).get(address, "")
