"""Reply addresses of digests: `bridge+r.<token>@domain`, one per person and thread.

No I/O and no key: the caller passes `mac`, the keyed hash (HMAC-SHA256
under the app's signing key, `Signer.mac`), and today's date.

A token is 20 packed bytes written as 32 lower-case base32 letters (no
padding; some MTAs fold the case of local parts, and base32 survives it):

    message pk (5 bytes) | expiry day (2) | person (5) | tag (8)

- message pk: the message the reply answers (the thread's newest message
  the person may see in their digest);
- expiry day: days since 1970-01-01, the last day the token is valid;
- person: the first 5 bytes of mac("person:" + address), so a token names
  its person without spelling their address;
- tag: the first 8 bytes of mac("reply:" + the 12 bytes before it).

With `bridge+r.` in front the local part is 41 characters, well inside RFC
5321's 64 (a longer bridge local part leaves room for 23 characters).
Forging a tag takes 2**64 guesses; each is one SMTP transaction.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

Mac = Callable[[bytes], bytes]

TAG = "r."  # after the recipient delimiter: `bridge+r.<token>`
DELIMITER = "+"
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
TOKEN_LENGTH = 32
_EPOCH = date(1970, 1, 1)
_PK_BYTES, _DAY_BYTES, _PERSON_BYTES, _TAG_BYTES = 5, 2, 5, 8
_BODY = _PK_BYTES + _DAY_BYTES + _PERSON_BYTES
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


@dataclass(frozen=True, slots=True)
class ReplyToken:
    """What a valid token says: the message answered, whose it is, until when."""

    message_pk: int
    person: bytes
    expires: date

    def belongs_to(self, address: str, mac: Mac) -> bool:
        """Whether `address` is the person the token was made for."""
        return hmac.compare_digest(self.person, person_tag(address, mac))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a token is refused, in words for the person who used it."""

    reason: str


def person_tag(address: str, mac: Mac) -> bytes:
    return mac(b"person:" + address.strip().lower().encode("utf-8"))[:_PERSON_BYTES]


def make_token(mac: Mac, message_pk: int, address: str, expires: date) -> str:
    """The token for `address`'s reply to `message_pk`, valid through `expires`."""
    day = (expires - _EPOCH).days
    if not 0 <= message_pk < 1 << (8 * _PK_BYTES) or not 0 <= day < 1 << (8 * _DAY_BYTES):
        raise ValueError(f"message {message_pk} or day {expires} does not fit a reply token")
    body = (
        message_pk.to_bytes(_PK_BYTES, "big")
        + day.to_bytes(_DAY_BYTES, "big")
        + person_tag(address, mac)
    )
    packed = body + _tag(body, mac)
    return base64.b32encode(packed).decode("ascii").lower()


def read_token(mac: Mac, token: str, today: date) -> ReplyToken | Refusal:
    """The token's contents when we made it and it has not expired, else why not."""
    token = token.strip().lower()
    if len(token) != TOKEN_LENGTH or not set(token) <= _ALPHABET:
        return Refusal("this reply address is not one Bridge made")
    packed = base64.b32decode(token.upper())
    body, tag = packed[:_BODY], packed[_BODY:]
    if not hmac.compare_digest(tag, _tag(body, mac)):
        return Refusal("this reply address is not one Bridge made")
    pk = int.from_bytes(body[:_PK_BYTES], "big")
    day = int.from_bytes(body[_PK_BYTES : _PK_BYTES + _DAY_BYTES], "big")
    expires = _EPOCH + timedelta(days=day)
    if today > expires:
        return Refusal(
            f"this reply address expired on {expires.isoformat()}; reply from the viewer instead"
        )
    return ReplyToken(pk, body[_PK_BYTES + _DAY_BYTES :], expires)


def _tag(body: bytes, mac: Mac) -> bytes:
    return mac(b"reply:" + body)[:_TAG_BYTES]


def reply_address(base: str, token: str) -> str | None:
    """`local+r.token@domain` for the bridge's address `base`; None when it would not fit."""
    local, at, domain = base.strip().lower().rpartition("@")
    if not at or not local or not domain:
        return None
    local_part = f"{local}{DELIMITER}{TAG}{token}"
    if len(local_part) > MAX_LOCAL_PART:
        return None
    return f"{local_part}@{domain}"


def token_in(recipient: str, base: str) -> str | None:
    """The token when `recipient` is a reply address of the bridge's address `base`, else None.

    Case does not matter: local part, domain and token are all compared folded.
    """
    local, at, domain = base.strip().lower().rpartition("@")
    r_local, r_at, r_domain = recipient.strip().lower().rpartition("@")
    if not at or not r_at or not local or r_domain != domain:
        return None
    prefix = f"{local}{DELIMITER}{TAG}"
    if not r_local.startswith(prefix):
        return None
    return r_local[len(prefix) :]


def is_reply_address(recipient: str, base: str) -> bool:
    return token_in(recipient, base) is not None
