"""Store functions for sign-in: login tokens, browser sessions, people's own settings.

Sync functions taking a Session; they flush, never commit. Only hashes of
secrets are stored: a login token and a session id are random strings the
person holds (in a link, in a cookie); the tables keep their SHA-256, so a
copy of the database signs nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bridge.signing import FEED, Signer
from bridge.store.tables import LoginToken, Person, User, WebSession
from bridge.web.frame.keys import UserPrefs

LOGIN_LIFETIME = timedelta(minutes=15)
# Rows older than this are only history: rate limits look back one hour.
LOGIN_KEEP = timedelta(days=1)
RATE_WINDOW = timedelta(hours=1)
FREQUENCIES = ("", "off", "daily", "weekly")


def secret_hash(raw: str) -> str:
    """What the store keeps of a token or session id: its SHA-256, in hex."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A live session and its person's settings, read together in one statement."""

    address: str
    via: str
    prefs: UserPrefs


# --- sessions -------------------------------------------------------------


def create_session(session: Session, address: str, via: str, now: datetime, days: int) -> str:
    """A new session for `address` (via "link" or "sso"); the raw id for the cookie."""
    raw_id = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_hash=secret_hash(raw_id),
            address=address.strip().lower(),
            via=via,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
    )
    session.flush()
    return raw_id


def load_session(session: Session, raw_id: str, now: datetime) -> SignedIn | None:
    """The session with this raw id, unless expired or deleted, with the person's settings."""
    row = session.execute(
        select(
            WebSession.address,
            WebSession.via,
            User.language,
            User.timezone,
            User.digest_frequency,
            User.feed_epoch,
        )
        .outerjoin(User, User.address == WebSession.address)
        .where(WebSession.id_hash == secret_hash(raw_id), WebSession.expires_at > now)
    ).first()
    if row is None:
        return None
    prefs = UserPrefs(
        row.address,
        row.language or "",
        row.timezone or "",
        row.digest_frequency or "",
        row.feed_epoch or 0,
    )
    return SignedIn(row.address, row.via, prefs)


def delete_session(session: Session, raw_id: str) -> bool:
    """Sign a browser out for good: its cookie no longer names a session."""
    done = session.execute(delete(WebSession).where(WebSession.id_hash == secret_hash(raw_id)))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def purge_expired(session: Session, now: datetime) -> None:
    """Forget expired sessions and login tokens older than a day."""
    session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    session.execute(delete(LoginToken).where(LoginToken.created_at < now - LOGIN_KEEP))


# --- login tokens -----------------------------------------------------------


def create_login_token(
    session: Session,
    address: str,
    client: str,
    now: datetime,
    *,
    usable: bool = True,
    lifetime: timedelta = LOGIN_LIFETIME,
) -> str:
    """Record a sign-in request; the raw token for the link.

    Every request is recorded, also for addresses that get no mail
    (`usable=False`: the row is born used, so its token never signs in),
    so rate limits count known and unknown addresses alike.
    """
    raw = secrets.token_urlsafe(32)
    session.add(
        LoginToken(
            token_hash=secret_hash(raw),
            address=address.strip().lower(),
            client=client[:64],
            created_at=now,
            expires_at=now + lifetime,
            used_at=None if usable else now,
        )
    )
    session.flush()
    return raw


def login_token_valid(session: Session, raw: str, now: datetime) -> bool:
    """Whether the link would sign in now (unused, unexpired); it stays unused."""
    found = session.execute(
        select(LoginToken.token_hash).where(
            LoginToken.token_hash == secret_hash(raw),
            LoginToken.used_at.is_(None),
            LoginToken.expires_at > now,
        )
    ).first()
    return found is not None


def consume_login_token(session: Session, raw: str, now: datetime) -> str | None:
    """Use the link: the address it signs in, or None when unknown, used or expired.

    One conditional UPDATE decides: of two requests racing with the same
    token, exactly one changes the row (PostgreSQL re-checks the WHERE on
    the row it locks; SQLite has one writer at a time).
    """
    digest = secret_hash(raw)
    done = session.execute(
        update(LoginToken)
        .where(
            LoginToken.token_hash == digest,
            LoginToken.used_at.is_(None),
            LoginToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.execute(
        select(LoginToken.address).where(LoginToken.token_hash == digest)
    ).scalar_one()


def recent_requests(session: Session, now: datetime, address: str, client: str) -> tuple[int, int]:
    """Sign-in requests in the last hour: (for this address, from this client)."""
    since = now - RATE_WINDOW
    by_address = session.execute(
        select(func.count())
        .select_from(LoginToken)
        .where(LoginToken.address == address.strip().lower(), LoginToken.created_at > since)
    ).scalar_one()
    by_client = session.execute(
        select(func.count())
        .select_from(LoginToken)
        .where(LoginToken.client == client[:64], LoginToken.created_at > since)
    ).scalar_one()
    return int(by_address), int(by_client)


def is_known_person(session: Session, address: str) -> bool:
    """Whether `address` took part in any stored mail."""
    found = session.execute(
        select(Person.id).where(Person.address == address.strip().lower()).limit(1)
    ).first()
    return found is not None


# --- people's settings ------------------------------------------------------


def get_user(session: Session, address: str) -> User | None:
    return session.get(User, address.strip().lower())


def _user(session: Session, address: str, now: datetime) -> User:
    found = get_user(session, address)
    if found is None:
        found = User(
            address=address.strip().lower(),
            language="",
            timezone="",
            digest_frequency="",
            feed_epoch=0,
            created_at=now,
        )
        session.add(found)
    return found


def update_user(session: Session, address: str, now: datetime, **values: Any) -> User:
    """Save some of a person's settings (language, timezone, digest_frequency)."""
    allowed = {"language", "timezone", "digest_frequency"}
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not a user setting: {', '.join(sorted(unknown))}")
    if values.get("digest_frequency", "") not in FREQUENCIES:
        raise ValueError(
            f"digest_frequency {values['digest_frequency']!r} is not one of off, daily, weekly"
        )
    row = _user(session, address, now)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


def bump_feed_epoch(session: Session, address: str, now: datetime) -> int:
    """Revoke every feed link the person handed out; the new epoch."""
    row = _user(session, address, now)
    row.feed_epoch = (row.feed_epoch or 0) + 1
    session.flush()
    return row.feed_epoch


# --- feed tokens --------------------------------------------------------------


def feed_token(signer: Signer, address: str, feed_epoch: int) -> str:
    """The `?token=` of a person's feed links; a new epoch makes older ones invalid."""
    return signer.sign(FEED, [address.strip().lower(), int(feed_epoch)])


def feed_viewer_address(signer: Signer, token: str) -> tuple[str, int] | None:
    """(address, epoch) of a feed token we signed; compare the epoch with User.feed_epoch."""
    payload = signer.unsign(FEED, token)
    if (
        isinstance(payload, list)
        and len(payload) == 2
        and isinstance(payload[0], str)
        and isinstance(payload[1], int)
        and not isinstance(payload[1], bool)
    ):
        return payload[0], payload[1]
    return None
