"""One IMAP account in one thread: connect, sync every folder, IDLE or poll, reconnect.

imapclient is synchronous, so each account gets a thread of its own; a
failure of any kind (refused login, dead or hung server, database error)
is logged in one line, shown in the account's status, and retried after an
exponential backoff. A login the server refuses is retried far more slowly
(a directory that locks an account after a few failures must not see them),
or at once when the password changes. Nothing in one account's thread
touches another's.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from bridge.config import ImapAccount, read_secret
from bridge.ingest.imap_status import (
    CONNECTING,
    ERROR,
    IDLE,
    LOGIN_REFUSED,
    POLLING,
    STOPPED,
    SYNCING,
    AccountStatus,
)
from bridge.ingest.imap_sync import FolderSync, ImapStore

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
IDLE_CHECK = 0.5  # seconds between looks at the stop flag while idling
PASSWORD_CHECK = 0.5  # seconds between looks for a new password after a refused login


def read_password(account: ImapAccount) -> str:
    """The account's password, read at each connection so that rotating it needs no restart."""
    return read_secret(account.password_env, account.password_file)


def connect(account: ImapAccount, password: str | None = None) -> IMAPClient:
    """A logged-in client; every socket operation has a timeout."""
    timeout = _timeout(account)
    context = ssl.create_default_context(cafile=account.ca_file or None)
    client = IMAPClient(
        account.host,
        account.server_port,
        ssl=account.tls == "tls",
        ssl_context=context if account.tls == "tls" else None,
        timeout=timeout,
    )
    try:
        if account.tls == "starttls":
            client.starttls(context)
        client.login(account.username, read_password(account) if password is None else password)
    except BaseException:
        _close(client)
        raise
    return client


def _timeout(account: ImapAccount) -> object:
    from imapclient.imapclient import SocketTimeout

    return SocketTimeout(connect=account.connect_timeout, read=account.read_timeout)


def _close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


def refused_login(exc: BaseException) -> bool:
    """The server said no to the credentials, not "try later" (RFC 5530 UNAVAILABLE)."""
    return isinstance(exc, LoginError) and "UNAVAILABLE" not in str(exc).upper()


def _password_or_none(account: ImapAccount) -> str | None:
    try:
        return read_password(account)
    except Exception:  # unset variable, missing file: `connect` reports it
        return None


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


class ImapWorker:
    """Keeps one account's folders stored until `stop` is set; `run` never raises."""

    def __init__(
        self,
        account: ImapAccount,
        store: ImapStore,
        status: AccountStatus | None = None,
        backoff_max: float = 300.0,
        *,
        login_backoff: tuple[float, float] = (300.0, 3600.0),
    ) -> None:
        self.account = account
        self.store = store
        self.status = status or AccountStatus(account.name)
        self.backoff_max = backoff_max
        self.login_backoff = login_backoff  # (first wait, longest wait) after a refused login
        self._client: IMAPClient | None = None
        self._finished: set[str] = set()  # folders whose left-over after-actions are done
        self._synced = False  # a full pass succeeded on the current connection

    def run(self, stop: threading.Event) -> None:
        delay = BACKOFF_START
        login_delay, login_delay_max = self.login_backoff
        refused = False  # the last login was refused: until one succeeds, retry slowly
        while not stop.is_set():
            if self.status.state != ERROR:  # an account in error stays so until it works
                self.status.set_state(CONNECTING, connected=False)
            self._synced = False
            password = _password_or_none(self.account)
            logged_in = False
            try:
                self._client = connect(self.account, password)
                logged_in = True
                refused, login_delay = False, self.login_backoff[0]
                self.status.logged_in()
                self._serve(self._client, stop)
            except Exception as exc:  # a worker outlives anything the server or store does
                if stop.is_set():
                    break
                if self._synced:  # it worked for a while: a new outage starts the backoff again
                    delay = BACKOFF_START
                if refused_login(exc) or (refused and not logged_in):
                    # After a refusal, servers answer the next logins slowly (Dovecot's
                    # auth penalty) and a read may time out: still not a time to hurry.
                    refused = True
                    self.status.failed(describe(exc), LOGIN_REFUSED, login_delay)
                    log.error(
                        "imap %s: the server refused the login of %s (%s); next attempt in "
                        "%.0fs, or as soon as the password changes",
                        self.account.name,
                        self.account.username,
                        describe(exc),
                        login_delay,
                    )
                    self._wait_for_password(stop, login_delay, password)
                    login_delay = min(login_delay * 2, max(login_delay_max, login_delay))
                    continue
                self.status.failed(describe(exc), retry_in=delay)
                log.warning(
                    "imap %s: %s; reconnecting in %.0fs", self.account.name, describe(exc), delay
                )
                stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
            finally:
                client, self._client = self._client, None
                if client is not None:
                    _close(client)
        self.status.set_state(STOPPED, connected=False)

    def _wait_for_password(
        self, stop: threading.Event, seconds: float, refused: str | None
    ) -> None:
        """Wait `seconds`, or less if the password is no longer the one refused."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            stop.wait(min(PASSWORD_CHECK, remaining))
            if _password_or_none(self.account) != refused:
                log.info("imap %s: the password changed: trying it now", self.account.name)
                return

    def interrupt(self) -> None:
        """Break a blocking read (shutdown): the thread notices `stop` right after."""
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.socket().shutdown(socket.SHUT_RDWR)

    def _serve(self, client: IMAPClient, stop: threading.Event) -> None:
        account = self.account
        self.status.set_state(SYNCING, connected=True)
        if account.after_action == "move" and not client.folder_exists(account.move_to):
            client.create_folder(account.move_to)
        can_idle = account.idle and client.has_capability("IDLE")
        sync = FolderSync(client, account, self.store, self.status, stop)
        while not stop.is_set():
            for folder in account.folders:
                if stop.is_set():
                    return
                sync.run(folder, finish_actions=folder not in self._finished)
                self._finished.add(folder)
                self.status.synced(folder)
            self._synced = True
            self.status.set_state(IDLE if can_idle else POLLING, connected=True)
            if can_idle:
                self._idle(client, stop)
            else:
                stop.wait(account.poll_interval)

    def _idle(self, client: IMAPClient, stop: threading.Event) -> None:
        """IDLE on the first folder until it announces mail, the timeout, or stop.

        With several folders the others are looked at every poll_interval.
        """
        account = self.account
        folders = account.folders
        if len(folders) > 1:
            client.select_folder(folders[0])
        wait = float(account.idle_timeout)
        if len(folders) > 1:
            wait = min(wait, account.poll_interval)
        deadline = time.monotonic() + wait
        client.idle()
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            responses = _idle_check(client, min(IDLE_CHECK, remaining))
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                break
        client.idle_done()


def _idle_check(client: IMAPClient, timeout: float) -> list[Any]:
    """`client.idle_check`, except that a connection the server closed raises.

    imapclient's idle_check swallows EOF and returns nothing, forever: a
    socket still readable right after an empty check has been closed.
    """
    responses: list[Any] = client.idle_check(timeout=timeout)
    if responses:
        return responses
    sock = client.socket()
    if select.select([sock], [], [], 0)[0]:
        responses = client.idle_check(timeout=0)
        if not responses and select.select([sock], [], [], 0)[0]:
            raise ConnectionError("the server closed the connection")
    return responses
