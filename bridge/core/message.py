"""The value types every stage passes along: raw bytes in, parsed message out.

Three message types carry three names: `RawMessage` (bytes + where they came
from), `ParsedMessage` (what the parser understood) and the ORM `Message`
(what the store keeps, in `bridge.store.tables`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where one copy of a message was seen.

    `source` is the kind of source ("file", "smtp", "lmtp", "imap");
    `location` names it for people (a file path, an IMAP account/folder, the
    SMTP listener); `mailbox` is the mailbox or user folder the copy belongs
    to (an Enron user, an IMAP folder, an envelope recipient); `key` is
    unique for this copy within the source (file path and offset, IMAP
    UIDVALIDITY/UID, SMTP queue id), so seeing the same copy twice is
    recognised.

    `envelope_to` names the people this copy was delivered to: the SMTP/LMTP
    RCPT TO addresses, the `owners` of the IMAP account it was read from, or
    the owners given to `bridge import` (`--owner`, `--owners`). Empty when
    nobody is known to have received it (a shared mailbox, an archive
    imported without owners).
    """

    source: str
    location: str
    mailbox: str = ""
    key: str = ""
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RawMessage:
    """The bytes of one copy of a message, exactly as received."""

    data: bytes
    provenance: Provenance


# A large message received into a file, handed over as the function that reads
# it: it is called in the thread that prepares the message, so its bytes are in
# memory only from then until it is stored.
LoadRaw = Callable[[], RawMessage]


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox: display name and lower-cased addr-spec.

    `flagged` is set when the header was ambiguous or broken and the address
    is a best guess (such as `alice@x)<bob@y>`).
    """

    name: str
    address: str
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True, slots=True)
class SplitText:
    """What the author wrote, apart from what they quoted and signed."""

    new_text: str
    quoted_text: str
    signature: str


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """Everything later stages need from one message, as clean Unicode.

    Text fields hold no NUL bytes and no lone surrogates. `message_id`,
    `in_reply_to` and `references` are normalised (no angle brackets).
    `message_id` is None when the message carries none (the store then
    derives a stable one from the content hash). `date` is timezone-aware
    UTC, or None when missing or absurd (then `flags` says which).
    `date_local` keeps the wall-clock time as written, for matching the
    "Sent:" lines of quoted Outlook headers.
    """

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    thread_index: bytes | None
    date: datetime | None
    date_local: datetime | None
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    list_id: str | None
    headers: tuple[tuple[str, str], ...]
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    flags: frozenset[str] = field(default_factory=frozenset)
    defects: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """What the admin rules decided for one copy of a message.

    `hits` names every rule that matched, in order; `skip` names the rule
    that said not to bridge the message (it is then kept and counted only).
    """

    space: str | None = None
    tags: tuple[str, ...] = ()
    private: bool = False
    skip: str | None = None
    hits: tuple[str, ...] = ()


class Flag:
    """Names of message flags, stored as a sorted list on each message."""

    NO_DATE = "no-date"  # no Date header: ordered by arrival
    BAD_DATE = "bad-date"  # unparsable or absurd Date
    NO_MESSAGE_ID = "no-message-id"  # id derived from the content hash
    ADDRESS_FLAGGED = "address-flagged"  # an address header was ambiguous
    HTML_ONLY = "html-only"  # text made from the HTML part
    TRUNCATED = "truncated"  # a limit cut part of the message
    PARSE_DEFECTS = "parse-defects"  # the MIME structure was repaired
    AUTO_REPLY = "auto-reply"  # RFC 3834 auto-reply / vacation
    BOUNCE = "bounce"  # delivery status notification (RFC 3464)
    OWN = "own"  # mail the bridge itself sent
    RECONSTRUCTED = "reconstructed"  # rebuilt from a quoted Outlook header
    # Its Message-ID belongs to another message with other content: stored apart,
    # under a collision id (core/linking/dedupe.collision_id), private to its own parties.
    ID_COLLISION = "id-collision"
