"""One IMAP account in one thread: connect, sync every folder, IDLE or poll, reconnect.

imapclient is synchronous, so each account gets a thread of its own; a
failure of any kind (refused login, dead or hung server, database error)
is logged in one line, shown in the account's status, and retried after an
exponential backoff. Nothing in one account's thread touches another's.
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

from bridge.config import ImapAccount, read_secret
from bridge.ingest.imap_status import (
    CONNECTING,
    ERROR,
    IDLE,
    POLLING,
    STOPPED,
    SYNCING,
    AccountStatus,
)
from bridge.ingest.imap_sync import FolderSync, ImapStore

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
IDLE_CHECK = 0.5  # seconds between looks at the stop flag while idling


def read_password(account: ImapAccount) -> str:
    """The account's password, read at each connection so that rotating it needs no restart."""
    return read_secret(account.password_env, account.password_file)


def connect(account: ImapAccount) -> IMAPClient:
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
        client.login(account.username, read_password(account))
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
    ) -> None:
        self.account = account
        self.store = store
        self.status = status or AccountStatus(account.name)
        self.backoff_max = backoff_max
        self._client: IMAPClient | None = None
        self._finished: set[str] = set()  # folders whose left-over after-actions are done
        self._synced = False  # a full pass succeeded on the current connection

    def run(self, stop: threading.Event) -> None:
        delay = BACKOFF_START
        while not stop.is_set():
            if self.status.state != ERROR:  # an account in error stays so until it works
                self.status.set_state(CONNECTING, connected=False)
            self._synced = False
            try:
                self._client = connect(self.account)
                self._serve(self._client, stop)
            except Exception as exc:  # a worker outlives anything the server or store does
                if stop.is_set():
                    break
                if self._synced:  # it worked for a while: a new outage starts the backoff again
                    delay = BACKOFF_START
                self.status.failed(describe(exc))
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
