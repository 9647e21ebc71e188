"""Signed tokens for links and cookies (itsdangerous), one purpose each.

A token signed for one purpose ("session", "feed", "unsubscribe") never
verifies for another: the purpose is the salt. The key comes from
`[web] secret_env` / `secret_file`, else from the database (made on first
use), so every process sharing the database signs alike.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

SESSION, FEED, UNSUBSCRIBE = "session", "feed", "unsubscribe"
DIGEST_REPLY = "digest-reply"


class Signer:
    """Signs and checks small JSON payloads for one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a signing key needs at least 16 bytes")
        self._key = key

    def sign(self, purpose: str, payload: Any) -> str:
        return URLSafeSerializer(self._key, salt=purpose).dumps(payload)

    def unsign(self, purpose: str, token: str) -> Any | None:
        """The payload, or None when the token is not one we signed for `purpose`."""
        try:
            return URLSafeSerializer(self._key, salt=purpose).loads(token)
        except BadSignature:
            return None

    def mac(self, purpose: str, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` under a key derived for `purpose` (compact tokens)."""
        key = hmac.new(self._key, b"bridge-mac:" + purpose.encode("utf-8"), hashlib.sha256)
        return hmac.new(key.digest(), data, hashlib.sha256).digest()

    def sign_timed(self, purpose: str, payload: Any) -> str:
        return URLSafeTimedSerializer(self._key, salt=purpose).dumps(payload)

    def unsign_timed(self, purpose: str, token: str, max_age: int) -> Any | None:
        """The payload if signed for `purpose` less than `max_age` seconds ago."""
        try:
            return URLSafeTimedSerializer(self._key, salt=purpose).loads(token, max_age=max_age)
        except (SignatureExpired, BadSignature):
            return None
