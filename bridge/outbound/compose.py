"""The one builder of mail Bridge sends: its own (digests, sign-in links), and people's replies.

Every header is built from clean strings: control characters (CR and LF
above all) become spaces, runs of white space one space, giant subjects are
cut, and non-ASCII text is left to the email package to encode (RFC 2047
in headers, quoted-printable or base64 in bodies, so the bytes are 7-bit and
no relay rewrites them). Parsed header objects are never reused (Python
3.11 before 3.11.10 folds such objects without re-quoting newlines). At the
end the message is serialised and parsed again under `email.policy.strict`;
if the parse does not give back exactly the headers that were set, the
message is refused rather than sent.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import format_datetime

from bridge.core.admin_rules.loops import ORIGIN_HEADER, PERSON_MAIL
from bridge.errors import AddressError

# RFC 5322 allows 998 characters a line; folding makes longer subjects legal,
# but no mail client shows more than a line, and a cap bounds the work.
MAX_SUBJECT = 200
MAX_NAME = 100
MAX_HEADER_VALUE = 2000
ELLIPSIS = "…"
_SPACES = re.compile(r"\s+")
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?]*\?=")
# RFC 5322 field names: printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# RFC 5322 atext and dots (a dot-atom, or the obsolete form with stray dots).
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
# Headers holding <URI> lists (RFC 2369): folded only between URIs. The email
# package would otherwise turn a long URL into RFC 2047 encoded words, which
# no mail client reads back as a URL.
URI_HEADERS = frozenset({"list-unsubscribe", "list-help", "list-subscribe", "list-archive"})
# Headers compose sets itself; callers may not set them through extra_headers.
OWN_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Reply-To",
        "In-Reply-To",
        "References",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Auto-Submitted",
        ORIGIN_HEADER,
    )
)


class OutgoingPolicy(EmailPolicy):
    """`email.policy.SMTP`, except that <URI> list headers fold between their URIs only."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in URI_HEADERS and str(value).isascii():
            return _fold_uris(name, str(value), self.linesep)
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in URI_HEADERS and str(value).isascii():
            return _fold_uris(name, str(value), self.linesep).encode("ascii")
        return super().fold_binary(name, value)


def _fold_uris(name: str, value: str, linesep: str) -> str:
    uris = [part.strip() for part in value.split(",") if part.strip()]
    return f"{name}: " + f",{linesep} ".join(uris) + linesep


OUTGOING = OutgoingPolicy(linesep="\r\n")


def clean_text(value: str, limit: int) -> str:
    """`value` as one line: control and format characters become spaces, cut to `limit`.

    RFC 2047 encoded words in it are decoded first: the email package would
    decode them when the header is set (and Python 3.11 before 3.11.10 would
    then write a decoded CR LF out as a line break).
    """
    value = _decode_words(without_lone_surrogates(value))
    chars = [" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in value]
    text = _SPACES.sub(" ", "".join(chars)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + ELLIPSIS
    return text


def _decode_words(value: str) -> str:
    for _ in range(3):  # words inside words: decode until nothing changes
        if not _ENCODED_WORD.search(value):
            return value
        try:
            decoded = str(make_header(decode_header(value)))
        except (HeaderParseError, UnicodeError, LookupError, ValueError):
            decoded = value
        if decoded == value:
            break
        value = decoded
    # Still shaped like an encoded word (it did not decode): break the shape.
    return _ENCODED_WORD.sub(lambda m: "= ?" + m.group(0)[2:], value)


def parse_address(value: str) -> tuple[str, str]:
    """(local part, ASCII domain) of a bare address, or AddressError saying why not.

    Local parts of atext and dots are taken even when not a strict dot-atom
    ("k..allen", common in real mail systems): the header then quotes them.
    """
    raw = value.strip()
    if not raw:
        raise AddressError(value, "empty address")
    if any(unicodedata.category(c)[0] in "CZ" for c in raw):
        raise AddressError(value, "contains white space or control characters")
    local, at, domain = raw.rpartition("@")
    if not at or not local or not domain:
        raise AddressError(value, "not of the form name@domain")
    if not local.isascii():
        raise AddressError(value, "non-ASCII local part (needs SMTPUTF8)")
    if not _LOCAL.fullmatch(local):
        raise AddressError(value, "the part before @ has characters an address cannot have")
    if len(local) > 64:  # RFC 5321 section 4.5.3.1.1
        raise AddressError(value, "the part before @ is longer than 64 characters")
    try:
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise AddressError(value, f"bad domain: {exc}") from None
    if not _DOMAIN.fullmatch(domain):
        raise AddressError(value, "bad domain")
    return local, domain.lower()


def _address(address: str, name: str) -> Address:
    local, domain = parse_address(address)
    return Address(display_name=clean_text(name, MAX_NAME), username=local, domain=domain)


def make_message_id(domain: str, now: datetime) -> str:
    """A new Message-ID at `domain`: time for sorting, randomness for uniqueness."""
    return f"<{now.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(10)}@{domain}>"


def _checked_domain(message_id_domain: str) -> str:
    domain = message_id_domain.strip().lower()
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"message_id_domain {message_id_domain!r} is not a domain")
    return domain


def compose(
    *,
    from_address: str,
    from_name: str,
    to_address: str,
    to_name: str,
    subject: str,
    text: str,
    html: str | None = None,
    message_id_domain: str,
    now: datetime,
    extra_headers: Mapping[str, str] | None = None,
) -> tuple[EmailMessage, bytes]:
    """The message and its verified wire bytes, ready for `outbox.enqueue` (enqueue the bytes:
    no second serialising).

    Raises AddressError for a From or To that does not parse, ValueError for
    a bad Message-ID domain or extra header name.
    """
    domain = _checked_domain(message_id_domain)
    when = now if now.tzinfo else now.replace(tzinfo=UTC)
    extras: list[tuple[str, str]] = []
    for name, value in (extra_headers or {}).items():
        if not _FIELD_NAME.fullmatch(name) or name.lower() in OWN_HEADERS:
            raise ValueError(f"header name {name!r} cannot be set")
        extras.append((name, clean_text(value, MAX_HEADER_VALUE)))

    message = EmailMessage(policy=OUTGOING)
    message["From"] = _address(from_address, from_name)
    message["To"] = _address(to_address, to_name)
    message["Subject"] = clean_text(subject, MAX_SUBJECT)
    message["Date"] = format_datetime(when.astimezone(UTC))
    message["Message-ID"] = make_message_id(domain, when)
    message["Auto-Submitted"] = "auto-generated"
    message[ORIGIN_HEADER] = domain
    for name, value in extras:
        message[name] = value
    body = _body_text(text)
    message.set_content(body, charset="utf-8", cte=_cte(body))
    if html is not None:
        page = _body_text(html)
        message.add_alternative(page, subtype="html", charset="utf-8", cte=_cte(page, "base64"))
    return message, verify(message)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file a person attached to their mail."""

    filename: str
    content_type: str
    data: bytes


# Media types sent as they were given; anything else goes as octet-stream.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
FLOWED_WIDTH = 72  # RFC 3676 section 4.2: lines of at most 78, 72 recommended


def compose_personal(
    *,
    from_address: str,
    from_name: str,
    reply_to: Sequence[tuple[str, str]] = (),
    to: Sequence[tuple[str, str]],
    cc: Sequence[tuple[str, str]] = (),
    subject: str,
    text: str,
    in_reply_to: str = "",
    references: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
    message_id_domain: str,
    now: datetime,
) -> tuple[EmailMessage, bytes]:
    """Mail a person wrote in Bridge (a reply, a new discussion), and its verified wire bytes.

    Unlike the bridge's own mail it is not Auto-Submitted: people answer it.
    Its `X-Bridge-Origin` says it is a person's mail, so its copies coming
    back are bridged (and merge with the stored one) rather than dropped as
    the bridge's own. `to`, `cc` and `reply_to` are (address, name) pairs;
    `text` goes out as format=flowed (RFC 3676). Raises AddressError for an
    address that does not parse, ValueError for a bad Message-ID domain or
    threading id.
    """
    domain = _checked_domain(message_id_domain)
    if not to:
        raise ValueError("a message needs at least one To recipient")
    when = now if now.tzinfo else now.replace(tzinfo=UTC)
    ids = [_message_id_value(value) for value in references]
    message = EmailMessage(policy=OUTGOING)
    message["From"] = _address(from_address, from_name)
    if reply_to:
        message["Reply-To"] = [_address(a, n) for a, n in reply_to]
    message["To"] = [_address(a, n) for a, n in to]
    if cc:
        message["Cc"] = [_address(a, n) for a, n in cc]
    message["Subject"] = clean_text(subject, MAX_SUBJECT)
    message["Date"] = format_datetime(when.astimezone(UTC))
    message["Message-ID"] = make_message_id(domain, when)
    if in_reply_to:
        message["In-Reply-To"] = _message_id_value(in_reply_to)
    if ids:
        message["References"] = " ".join(ids)
    message[ORIGIN_HEADER] = f"{domain}; {PERSON_MAIL}"
    body = flowed(_body_text(text))
    message.set_content(body, charset="utf-8", cte=_cte(body), params={"format": "flowed"})
    for item in attachments:
        maintype, subtype = _media_type(item.content_type)
        message.add_attachment(
            item.data,
            maintype=maintype,
            subtype=subtype,
            filename=clean_text(item.filename, MAX_NAME) or "attachment",
        )
    return message, verify(message)


def _message_id_value(value: str) -> str:
    text = value.strip()
    if not re.fullmatch(r"<[!-;=?-~]+>", text):  # printable ASCII, no <>, no space
        raise ValueError(f"{value!r} is not a Message-ID")
    return text


def _media_type(value: str) -> tuple[str, str]:
    text = value.strip().lower().split(";", 1)[0].strip()
    if not _MEDIA_TYPE.fullmatch(text) or text.startswith(("multipart/", "message/")):
        text = "application/octet-stream"
    maintype, _, subtype = text.partition("/")
    return maintype, subtype


def flowed(text: str, width: int = FLOWED_WIDTH) -> str:
    """`text` as format=flowed (RFC 3676): long paragraphs wrapped with soft breaks.

    A line ending in a space continues on the next (a soft break); a hard
    break has no trailing space, so trailing spaces people typed are dropped.
    Quoted lines keep their `>` depth on every piece. Lines that would read
    as quotes or as an mbox "From " line are space-stuffed (section 4.4).
    The signature separator "-- " is kept as it is (section 4.3).
    """
    out: list[str] = []
    for line in text.split("\n"):
        if line == "-- ":
            out.append(line)
            continue
        depth = len(line) - len(line.lstrip(">"))
        prefix, content = line[:depth], line[depth:].rstrip(" ")
        if depth and content.startswith(" "):
            content = content[1:]  # the customary space after ">" is not content
        pieces = _wrap(content, width - depth - 1)
        for i, piece in enumerate(pieces):
            if depth:
                stuffed = " " + piece if piece else ""
            else:
                stuffed = " " + piece if piece.startswith((" ", ">", "From ")) else piece
            if i < len(pieces) - 1:
                stuffed += " "  # soft break: the next line continues this one
            out.append(prefix + stuffed)
    return "\n".join(out)


def _wrap(content: str, width: int) -> list[str]:
    """`content` cut after spaces into pieces of about `width`; words are never split."""
    if len(content) <= width:
        return [content]
    pieces: list[str] = []
    while len(content) > width:
        cut = content.rfind(" ", 0, width + 1)
        if cut <= 0:
            cut = content.find(" ", width)  # one long word: the line stays long
            if cut < 0:
                break
        pieces.append(content[:cut])
        content = content[cut + 1 :]
    pieces.append(content)
    return pieces


def without_lone_surrogates(text: str) -> str:
    """`text` with any half of a UTF-16 pair left alone (JSON can carry one) as U+FFFD."""
    if text.isascii():
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _body_text(text: str) -> str:
    # One line-end style; a lone CR would otherwise end a line on some hops only.
    body = without_lone_surrogates(text).replace("\r\n", "\n").replace("\r", "\n")
    return body if body.endswith("\n") else body + "\n"


def _cte(body: str, otherwise: str = "quoted-printable") -> str:
    # 7-bit bodies travel unchanged through every relay; anything else is
    # encoded (never 8bit: safe from 8BITMIME downgrades). Plain text is
    # quoted-printable, readable in the source; HTML base64, far faster to make.
    if body.isascii() and all(len(line) <= 76 for line in body.splitlines()):
        return "7bit"
    return otherwise


def verify(message: EmailMessage) -> bytes:
    """The wire bytes of `message` (give these to `outbox.enqueue`), checked to parse back.

    The header block is parsed again under `email.policy.strict`; it must
    give back exactly the headers that were set, in order, with the same
    values. Raises ValueError when it does not (an injected or lost header,
    a defect) or when the bytes are not 7-bit. The parts' headers are the
    email package's own (`set_content`), with nothing a caller wrote in them.
    """
    data = message.as_bytes(policy=OUTGOING)
    if not data.isascii():
        raise ValueError("outgoing message is not 7-bit")
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    try:
        parsed = BytesParser(policy=policy.strict).parsebytes(head, headersonly=True)
        # White space is left out of the comparison: folding a long encoded
        # display name can add a space between two encoded words.
        want = [(k.lower(), _squeeze(str(v))) for k, v in message.items()]
        got = [(k.lower(), _squeeze(str(v))) for k, v in parsed.items()]
    except Exception as exc:  # strict raises the defect itself, of many classes
        raise ValueError(f"outgoing message does not parse strictly: {exc}") from None
    if want != got:
        names = sorted({k for k, _ in got} ^ {k for k, _ in want}) or [
            a[0] for a, b in zip(want, got, strict=False) if a != b
        ]
        raise ValueError(f"outgoing headers change when parsed again: {', '.join(names)}")
    return data


def _squeeze(value: str) -> str:
    return "".join(value.split())
