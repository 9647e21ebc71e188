"""What each IMAP account is doing, for `/healthz` and `/metrics`.

Written by the account's worker thread, read by the web handlers: each
account guards its fields with a lock and hands out plain-dict snapshots.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Account states, in the order a healthy worker goes through them.
STARTING = "starting"
CONNECTING = "connecting"
SYNCING = "syncing"
IDLE = "idle"  # IMAP IDLE: waiting for the server to announce mail
POLLING = "polling"  # no IDLE: waiting for the next poll
ERROR = "error"  # the last attempt failed; retrying after a backoff
LOGIN_REFUSED = "login-refused"  # error_kind: the server refused the credentials
STOPPED = "stopped"
STATES = (STARTING, CONNECTING, SYNCING, IDLE, POLLING, ERROR, STOPPED)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FolderStatus:
    uidvalidity: int | None = None
    last_uid: int = 0  # the checkpoint: stored up to here
    server_messages: int = 0  # EXISTS at the last SELECT
    pending: int = 0  # UIDs seen on the server above the checkpoint, not yet stored
    stored: int = 0  # copies stored by this process
    last_sync: datetime | None = None


@dataclass
class AccountStatus:
    """One account's state; every method is safe to call from any thread."""

    name: str
    state: str = STARTING
    connected: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_sync: datetime | None = None
    reconnects: int = 0
    failures: int = 0  # attempts failed in a row
    error_kind: str | None = None  # LOGIN_REFUSED, or None for any other failure
    retry_at: datetime | None = None  # when the next attempt is due, while in error
    folders: dict[str, FolderStatus] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_state(self, state: str, *, connected: bool | None = None) -> None:
        with self._lock:
            self.state = state
            if connected is not None:
                self.connected = connected

    def failed(self, error: str, kind: str | None = None, retry_in: float | None = None) -> None:
        with self._lock:
            now = _now()
            self.state = ERROR
            self.connected = False
            self.last_error = error
            self.last_error_at = now
            self.reconnects += 1
            self.failures += 1
            self.error_kind = kind
            self.retry_at = now + timedelta(seconds=retry_in) if retry_in is not None else None

    def logged_in(self) -> None:
        """The server accepted the login: the failures in a row are over."""
        with self._lock:
            self.failures = 0
            self.error_kind = None
            self.retry_at = None

    def folder(self, name: str) -> FolderStatus:
        with self._lock:
            return self.folders.setdefault(name, FolderStatus())

    def update_folder(self, name: str, **values: Any) -> None:
        with self._lock:
            status = self.folders.setdefault(name, FolderStatus())
            for key, value in values.items():
                setattr(status, key, value)

    def stored(self, name: str, count: int, last_uid: int, handled: int | None = None) -> None:
        """`count` copies stored, of `handled` UIDs done with (those expunged meanwhile too)."""
        with self._lock:
            status = self.folders.setdefault(name, FolderStatus())
            status.stored += count
            status.last_uid = last_uid
            status.pending = max(0, status.pending - (count if handled is None else handled))

    def synced(self, name: str) -> None:
        with self._lock:
            now = _now()
            self.folders.setdefault(name, FolderStatus()).last_sync = now
            self.last_sync = now

    @property
    def lag_messages(self) -> int:
        with self._lock:
            return sum(f.pending for f in self.folders.values())

    def lag_seconds(self, now: datetime | None = None) -> float | None:
        """Seconds since the last complete pass over every folder (None: never)."""
        with self._lock:
            if self.last_sync is None:
                return None
            return ((now or _now()) - self.last_sync).total_seconds()

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        lag_seconds = self.lag_seconds(now)
        with self._lock:
            return {
                "state": self.state,
                "connected": self.connected,
                "last_error": self.last_error,
                "last_error_at": _iso(self.last_error_at),
                "last_sync": _iso(self.last_sync),
                "lag_messages": sum(f.pending for f in self.folders.values()),
                "lag_seconds": lag_seconds,
                "reconnects": self.reconnects,
                "failures": self.failures,
                "error_kind": self.error_kind,
                "retry_at": _iso(self.retry_at),
                "folders": {
                    name: {
                        "uidvalidity": f.uidvalidity,
                        "last_uid": f.last_uid,
                        "server_messages": f.server_messages,
                        "pending": f.pending,
                        "stored": f.stored,
                        "last_sync": _iso(f.last_sync),
                    }
                    for name, f in self.folders.items()
                },
            }


class ImapStatus:
    """Every account's status by name: the daemon keeps one and shares it with the web."""

    def __init__(self) -> None:
        self._accounts: dict[str, AccountStatus] = {}
        self._lock = threading.Lock()

    def account(self, name: str) -> AccountStatus:
        with self._lock:
            return self._accounts.setdefault(name, AccountStatus(name))

    def forget(self, name: str) -> None:
        """Drop an account removed from the config (on reload)."""
        with self._lock:
            self._accounts.pop(name, None)

    def accounts(self) -> list[AccountStatus]:
        with self._lock:
            return list(self._accounts.values())

    @property
    def healthy(self) -> bool:
        return all(a.state != ERROR for a in self.accounts())

    def snapshot(self, now: datetime | None = None) -> dict[str, dict[str, Any]]:
        """For `/healthz`: each account's state, last error and lag."""
        return {a.name: a.snapshot(now) for a in self.accounts()}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
