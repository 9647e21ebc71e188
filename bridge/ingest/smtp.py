"""SMTP and LMTP ingest with aiosmtpd: receive, wrap in a RawMessage, hand over, reply.

The reply codes are named; `250` is sent only once the message's raw bytes
are committed to the store. LMTP answers once per accepted recipient after
the data (RFC 2033), so Postfix or Exim can retry exactly the ones that
failed. A `ConnectionGuard` caps connections (globally and per client
address) and answers `421` beyond the caps and while the daemon shuts down.
Mail to a digest's reply addresses (`bridge+r.<token>@...`) is never stored
as ordinary mail: `DigestReplies` checks it at RCPT and sends it on as the
person's reply after DATA; over SMTP such an address takes a transaction of
its own (`452 4.5.3` for any other recipient), over LMTP each recipient
gets its own answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session

from bridge.config import SmtpConfig
from bridge.core.message import LoadRaw, Provenance, RawMessage
from bridge.ingest import spool
from bridge.ingest.digest_replies import Accepted, Answer, DigestReplies

log = logging.getLogger(__name__)

OK = "250 2.0.0 Message accepted"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
NO_SUCH_USER = "550 5.1.1 No such recipient here"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please try again later"
SENDER_OK = "250 2.1.0 Sender OK"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_MANY_JUNK = "421 4.7.0 Too many commands without a message, closing connection"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
NO_ROOM = "452 4.3.1 Insufficient system storage, try again later"
BAD_SENDER = "553 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "553 5.1.3 Bad recipient address syntax"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
SESSION_TOO_LONG = "421 4.4.2 Session time limit exceeded, closing connection"
LINE_TOO_LONG = "500 5.5.2 Line too long"
# Digest reply addresses (`ingest/digest_replies.py`); `{reason}` is in plain English.
BAD_REPLY_ADDRESS = "550 5.1.1 Bad reply address: {reason}"
NOT_YOUR_REPLY_ADDRESS = "550 5.7.1 Reply refused: {reason}"
REPLY_SENT = "250 2.0.0 Reply sent to the discussion"
REPLY_DROPPED = "250 2.0.0 Accepted and dropped ({reason}): never sent on"
REPLY_REFUSED = "550 5.7.0 Reply not sent: {reason}"
REPLY_TOO_BIG = "552 5.3.4 Reply not sent: {reason}"
REPLY_LATER = "451 4.7.1 Reply not sent yet: {reason}"
# SMTP has one answer per transaction: a reply address takes one of its own
# (RFC 5321 4.5.3.1.10: the client sends the recipients refused 452 again).
REPLY_ALONE = "452 4.5.3 A reply address takes a transaction of its own, send the rest again"
_REPLY_CODES = {
    "sent": REPLY_SENT,
    "dropped": REPLY_DROPPED,
    "bad-address": BAD_REPLY_ADDRESS,
    "not-yours": NOT_YOUR_REPLY_ADDRESS,
    "refused": REPLY_REFUSED,
    "too-big": REPLY_TOO_BIG,
    "later": REPLY_LATER,
}
# aiosmtpd's own answers at the end of a DATA it refused, and what Bridge says instead
# (once per accepted recipient over LMTP, so the client stays in step).
_DATA_REFUSALS = {
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "552 Error: Too much mail data": TOO_BIG,
    spool.NO_ROOM: NO_ROOM,
}

Deliver = Callable[[RawMessage | LoadRaw], Awaitable[object]]
Settings = Callable[[], SmtpConfig]

LONGEST_LINE = 256 * 1024
_SIZE = re.compile(r"\bSIZE=(\d+)", re.IGNORECASE)


def unusable_address(address: str) -> bool:
    """An address no store can keep: control characters (NUL too) or bytes that are not UTF-8.

    aiosmtpd keeps undecodable bytes as lone surrogates; they and NUL cannot
    be written to PostgreSQL, not even to quarantine, so the client would get
    451 forever. They are refused at the command with a permanent 553.
    """
    return any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in address)


def reply_code(answer: Answer) -> str:
    """The reply line for a digest reply's `answer` (ASCII, one line)."""
    reason = answer.reason.rstrip(".").encode("ascii", "replace").decode("ascii")
    return _REPLY_CODES[answer.kind].format(reason=" ".join(reason.split()))


def lmtp_reply(address: str, reply: str) -> str:
    """One LMTP per-recipient reply line: the status with the recipient named."""
    code, _, text = reply.partition(" ")
    return f"{code} {text} <{address}>"


class BridgeHandler:
    """aiosmtpd handler: accepts mail for the configured recipients and stores it.

    `settings` is called per command, so a reload (SIGHUP) changes the accepted
    domains for the next RCPT without dropping any session.
    """

    def __init__(
        self,
        deliver: Deliver,
        settings: Settings,
        listener: str,
        protocol: str,
        spill_dir: str = "",
        replies: DigestReplies | None = None,
    ) -> None:
        self.deliver = deliver
        self.replies = replies  # mail to digest reply addresses; None: no such addresses
        self.settings = settings
        self.listener = listener
        self.protocol = protocol
        self.spill_dir = spill_dir  # where large messages spill when [smtp] spill_dir is empty

    def accepts(self, address: str) -> bool:
        domains = tuple(d.lower() for d in self.settings().domains)
        if not domains:
            return True
        address = address.lower()
        return address in domains or address.rpartition("@")[2] in domains

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if unusable_address(address):
            log.warning(
                "%s from %s: refused a sender address: %r", self.protocol, _peer(session), address
            )
            return BAD_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if unusable_address(address):
            return BAD_RECIPIENT
        if len(envelope.rcpt_tos) >= self.settings().max_recipients:
            return TOO_MANY_RECIPIENTS
        if not self.accepts(address):
            return NO_SUCH_USER
        found = self.replies.recipient(address, envelope.mail_from or "") if self.replies else None
        if isinstance(found, Answer):
            return reply_code(found)
        replies = _replies(envelope)
        if self.protocol == "smtp" and envelope.rcpt_tos and (found or replies):
            return REPLY_ALONE  # a reply address and anything else: two transactions
        if found is not None:
            replies[address] = found
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        replies = _replies(envelope)
        ordinary = [rcpt for rcpt in envelope.rcpt_tos if rcpt not in replies]
        answers: dict[str, str] = {}
        try:
            if ordinary:
                reply = await self._store(session, envelope, ordinary)
                answers.update(dict.fromkeys(ordinary, reply))
            for rcpt, accepted in replies.items():
                # Each reply address is answered alone: one may be sent, another refused.
                answers[rcpt] = await self._reply(envelope, accepted)
        except Exception as exc:  # any failure here is answered, per recipient for LMTP
            log.error(
                "%s DATA from %s failed: %s: %s",
                self.protocol,
                _peer(session),
                type(exc).__name__,
                exc,
            )
            answers = {rcpt: answers.get(rcpt, TEMPORARY_FAILURE) for rcpt in envelope.rcpt_tos}
        if self.protocol == "lmtp":
            # RFC 2033: one reply per accepted recipient, whatever happened.
            return "\r\n".join(
                lmtp_reply(rcpt, answers.get(rcpt, TEMPORARY_FAILURE)) for rcpt in envelope.rcpt_tos
            )
        # SMTP: either ordinary recipients alone or one reply address (see handle_RCPT).
        return answers.get(envelope.rcpt_tos[0], TEMPORARY_FAILURE)

    async def _reply(self, envelope: Envelope, accepted: Accepted) -> str:
        """Send mail to a digest reply address on as the person's reply; the reply line."""
        assert self.replies is not None  # nothing is Accepted without it
        spooled = getattr(envelope, "spool", None)
        if isinstance(spooled, spool.Spool) and spooled.spilled:
            data = await asyncio.to_thread(spooled.read)
        else:
            data = _content(envelope)
        answer = await self.replies.answer(accepted, envelope.mail_from or "", data)
        return reply_code(answer)

    async def _store(self, session: Session, envelope: Envelope, rcpts: list[str]) -> str:
        key = f"{self.protocol}:{uuid.uuid4().hex}"  # a queue id: each accepted copy is a delivery
        provenance = Provenance(
            self.protocol,
            self.listener,
            ",".join(rcpts),
            key,
            envelope.mail_from,
            tuple(rcpts),
        )
        spooled = getattr(envelope, "spool", None)
        message: RawMessage | LoadRaw
        if isinstance(spooled, spool.Spool) and spooled.spilled:
            message = lambda: RawMessage(spooled.read(), provenance)  # noqa: E731
        else:
            message = RawMessage(_content(envelope), provenance)
        try:
            await self.deliver(message)
        except Exception as exc:
            # The committer logged details with the Message-ID; the client retries.
            log.warning(
                "%s delivery from %s failed (%s: %s): answered 451",
                self.protocol,
                _peer(session),
                type(exc).__name__,
                exc,
            )
            return TEMPORARY_FAILURE
        return OK

    async def handle_exception(self, error: Exception) -> str:
        # Never `500` with internals: the client gets a temporary failure and retries.
        log.error("%s session error: %s: %s", self.protocol, type(error).__name__, error)
        return TEMPORARY_FAILURE


def _replies(envelope: Envelope) -> dict[str, Accepted]:
    """The digest reply addresses accepted in this transaction, by recipient."""
    found = getattr(envelope, "replies", None)
    if not isinstance(found, dict):  # an envelope aiosmtpd made itself
        found = {}
        envelope.replies = found  # type: ignore[attr-defined]
    return found


def _content(envelope: Envelope) -> bytes:
    data: Any = envelope.original_content or envelope.content or b""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return bytes(data)


def _peer(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ConnectionGuard:
    """Open sessions, capped in all and per client address; refuses all while closing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: set[GuardedSMTP] = set()
        self.per_client: Counter[str] = Counter()
        self.closing = False
        self.accepted = 0
        self.refused = 0
        self.on_change: Callable[[str, str], None] | None = None  # (protocol, result) for metrics
        self.in_flight = 0  # bytes reserved by messages being received (DATA)

    def reserve(self, size: int) -> bool:
        """Take `size` bytes of the DATA budget; False (take nothing) when it would overflow.

        One message alone is always let through, so a budget below the
        message size limit cannot refuse all mail.
        """
        budget = self.settings().max_data_bytes_in_flight
        if self.in_flight and self.in_flight + size > budget:
            return False
        self.in_flight += size
        return True

    def give_back(self, size: int) -> None:
        self.in_flight = max(0, self.in_flight - size)

    def admit(self, session: GuardedSMTP, client: str) -> str | None:
        """None when `session` may go on, else the reply to close it with."""
        settings = self.settings()
        refusal = None
        if self.closing:
            refusal = SHUTTING_DOWN
        elif (
            len(self.sessions) >= settings.max_connections
            or self.per_client[client] >= settings.max_connections_per_client
        ):
            refusal = TOO_MANY_CONNECTIONS
        if refusal is None:
            self.sessions.add(session)
            self.per_client[client] += 1
            self.accepted += 1
        else:
            self.refused += 1
            log.warning("%s connection from %s refused: %s", session.protocol, client, refusal)
        if self.on_change is not None:
            self.on_change(session.protocol, "refused" if refusal else "accepted")
        return refusal

    def release(self, session: GuardedSMTP, client: str) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    async def drain(self, deadline: float) -> None:
        """Refuse new sessions, close idle ones with 421, let messages in DATA finish.

        `deadline` is the loop time after which every session left is closed.
        """
        self.closing = True
        loop = asyncio.get_running_loop()
        while self.sessions:
            for session in list(self.sessions):
                if not session.busy or loop.time() >= deadline:
                    session.close_with(SHUTTING_DOWN)
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)


class SpooledEnvelope(Envelope):
    """aiosmtpd's envelope, with the spool its message body is received into."""

    def __init__(self) -> None:
        super().__init__()
        self.spool: spool.Spool | None = None
        self.replies: dict[str, Accepted] = {}  # digest reply addresses among rcpt_tos


class GuardedSMTP(SMTP):
    """aiosmtpd's SMTP with connection caps, a total session time limit and DATA tracking."""

    protocol = "smtp"
    # RFC 5321 allows 1000-byte lines, but real company mail (Enron's, Outlook's
    # unwrapped HTML) has longer ones; Postfix passes them on, so refusing
    # them would bounce real mail. Bounded per connection, and connections are capped.
    line_length_limit = LONGEST_LINE

    def __init__(
        self, handler: BridgeHandler, *, guard: ConnectionGuard, session_timeout: float, **kw: Any
    ) -> None:
        super().__init__(handler, **kw)
        self.handler = handler
        self.settings = handler.settings
        self.guard = guard
        self.session_timeout = session_timeout
        self.busy = False  # inside DATA: shutdown waits for it
        # Since the last message accepted: commands that do nothing, error replies.
        self.junk = 0
        self.errors = 0
        self._client = ""
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is not None:  # the same session, after STARTTLS
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        refusal = self.guard.admit(self, self._client)
        if refusal is not None:
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal.encode("ascii") + b"\r\n")
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._deadline = self.loop.call_later(
            self.session_timeout, self.close_with, SESSION_TOO_LONG
        )

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        if self._deadline is not None:
            self._deadline.cancel()
        self.guard.release(self, self._client)
        super().connection_lost(error)

    def close_with(self, reply: str) -> None:
        """Say `reply` (a 421) and close: for shutdown and the session time limit."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        assert isinstance(transport, asyncio.WriteTransport)
        log.info("%s session with %s closed: %s", self.protocol, self._client, reply)
        transport.write(reply.encode("ascii") + b"\r\n")
        transport.close()

    async def push(self, status: Any) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if self.busy and text in _DATA_REFUSALS:
            text = status = _DATA_REFUSALS[text]
            if self.protocol == "lmtp" and self.envelope is not None and self.envelope.rcpt_tos:
                status = "\r\n".join(lmtp_reply(r, text) for r in self.envelope.rcpt_tos)
        await super().push(status)
        if self.busy and text.startswith("250"):
            self.junk = self.errors = 0  # a message accepted: the session makes progress
        elif text[:1] in ("4", "5") and not text.startswith("421"):
            self.errors += 1
            if self.errors > self.settings().max_errors:
                self.close_with(TOO_MANY_ERRORS)

    async def _junk(self) -> bool:
        """Count a command that does nothing; True when the session was closed for it."""
        self.junk += 1
        if self.junk > self.settings().max_junk_commands:
            self.close_with(TOO_MANY_JUNK)
            return True
        return False

    async def smtp_NOOP(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_VRFY(arg)

    async def smtp_HELP(self, arg: str) -> None:
        if not await self._junk():
            await super().smtp_HELP(arg)

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._junk():
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._junk():
            await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        # aiosmtpd refuses SIZE= too, with its own words; this answers the named reply.
        match = _SIZE.search(arg or "")
        if match and self.data_size_limit and int(match.group(1)) > self.data_size_limit:
            await self.push(TOO_BIG)
            return
        await super().smtp_MAIL(arg)

    def data_received(self, data: bytes) -> None:
        # A transfer still sending is not idle: the idle timer runs from the
        # last bytes received during DATA, not from the DATA command.
        if self.busy and self.transport is not None:
            self._reset_timeout()
        super().data_received(data)

    def _declared_size(self) -> int:
        """The size this message may take in memory: its SIZE= if announced, else the limit."""
        limit = self.data_size_limit or 0
        options = " ".join(self.envelope.mail_options) if self.envelope is not None else ""
        match = _SIZE.search(options)
        declared = int(match.group(1)) if match else limit
        return min(declared, limit) if limit else declared

    async def smtp_DATA(self, arg: str) -> None:
        ready = self.envelope is not None and bool(self.envelope.rcpt_tos) and not arg
        size = self._declared_size() if ready else 0
        if size and not self.guard.reserve(size):
            # Memory for messages in transit is bounded across sessions: the
            # client retries later rather than the daemon growing without end.
            log.warning("%s DATA from %s deferred: %s", self.protocol, self._client, NO_ROOM)
            await self.push(NO_ROOM)
            return
        self.busy = True
        try:
            await self._data(arg)
        finally:
            self.busy = False
            if size:
                self.guard.give_back(size)

    def _create_envelope(self) -> SpooledEnvelope:
        return SpooledEnvelope()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, receiving into a `Spool`: past `[smtp] spill_bytes` the body
        goes to a temporary file, not RAM; the file is closed whatever happens.

        aiosmtpd keeps a body as a list of lines in memory, then joins them (about
        three times its size), and has no hook to stream it: this follows its
        1.4 `smtp_DATA` step for step, on its private `_reader`,
        `_call_handler_hook` and `_set_post_data_state` (aiosmtpd is pinned <2).
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, SpooledEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        settings = self.settings()
        body = spool.Spool(settings.spill_bytes, settings.spill_dir or self.handler.spill_dir)
        try:
            try:
                refusal = await spool.receive(self._reader, body, self.data_size_limit)
            except asyncio.CancelledError:
                log.info("%s connection from %s lost during DATA", self.protocol, self._client)
                self._writer.close()
                raise
            if refusal is not None:
                await self.push(refusal)
                self._set_post_data_state()
                return
            if body.spilled:
                log.debug(
                    "%s DATA from %s: %d bytes spilled", self.protocol, self._client, body.size
                )
                envelope.spool = body
            else:
                envelope.content = envelope.original_content = body.read()
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)
        finally:
            body.close()


class GuardedLMTP(GuardedSMTP, LMTP):
    protocol = "lmtp"


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for STARTTLS from a PEM certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def session_factory(
    handler: BridgeHandler,
    guard: ConnectionGuard,
    settings: Settings,
    context: ssl.SSLContext | None,
) -> Callable[[], GuardedSMTP]:
    """What `loop.create_server` calls for each connection, for one listener.

    Settings are read per connection, so a reload applies to the next session.
    """
    cls = GuardedLMTP if handler.protocol == "lmtp" else GuardedSMTP

    def make() -> GuardedSMTP:
        current = settings()
        return cls(
            handler,
            guard=guard,
            session_timeout=current.session_timeout,
            data_size_limit=current.max_message_bytes,
            enable_SMTPUTF8=current.smtputf8,
            hostname=current.hostname,
            tls_context=context,
            require_starttls=current.require_tls,
            timeout=current.idle_timeout,
            loop=asyncio.get_running_loop(),
        )

    return make
