"""One folder of one IMAP account, on a connected client: fetch in batches, store, then act.

The order is the whole point: a batch's messages and its checkpoint are
committed together (`ImapStore.store`), and only then is the after-action
(\\Seen, or MOVE) done on the server. A crash between the two leaves the
action undone, never a flagged or moved message unstored; the next start
finishes the action (`finish_after_action`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from imapclient import SEEN, IMAPClient

from bridge.config import ImapAccount
from bridge.core.message import Provenance, RawMessage
from bridge.ingest.imap_status import SYNCING, AccountStatus
from bridge.pipeline import Outcome
from bridge.store.bookkeeping.imap_state import Checkpoint

log = logging.getLogger(__name__)

SOURCE = "imap"
MAX_BATCH = 2000
MAX_BATCH_BYTES = 32 * 1024 * 1024  # bounds the memory one fetch can take
SIZE_CHUNK = 2000  # UIDs per RFC822.SIZE fetch: command lines stay well under 64 KB
PROGRESS_EVERY = 10.0  # seconds between progress lines of a long sync


class ImapStore(Protocol):
    """Where a worker reads its checkpoints and stores its batches (see `imap.SessionStore`)."""

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None: ...

    def store(self, raws: Sequence[RawMessage], checkpoint: Checkpoint) -> list[Outcome]: ...


def location(account: str, folder: str) -> str:
    """The delivery location of a folder: also how a rescan finds what it stored."""
    return f"{account}/{folder}"


def delivery_key(account: str, folder: str, uidvalidity: int, uid: int) -> str:
    return f"imap:{account}/{folder}/{uidvalidity}/{uid}"


class FolderSync:
    """Brings one folder's store up to date with the server; `run` once per pass."""

    def __init__(
        self,
        client: IMAPClient,
        account: ImapAccount,
        store: ImapStore,
        status: AccountStatus,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.account = account
        self.store = store
        self.status = status
        self.stop = stop

    def run(self, folder: str, finish_actions: bool) -> int:
        """Store what is new in `folder`; returns how many copies were handed to the store."""
        name = self.account.name
        info = self.client.select_folder(folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        saved = self.store.checkpoint(name, folder)
        last = 0
        if saved is not None and saved.uidvalidity == uidvalidity:
            last = saved.last_uid
        elif saved is not None:
            log.warning(
                "imap %s/%s: UIDVALIDITY changed from %d to %d: rescanning the folder",
                name,
                folder,
                saved.uidvalidity,
                uidvalidity,
            )
        if finish_actions and last:
            self.finish_after_action(last)
        uids = sorted(u for u in self.client.search(["UID", f"{last + 1}:*"]) if u > last)
        self.status.update_folder(
            folder,
            uidvalidity=uidvalidity,
            last_uid=last,
            server_messages=int(info.get(b"EXISTS", 0)),
            pending=len(uids),
        )
        if not uids:
            return 0
        self.status.set_state(SYNCING, connected=True)
        sizes = self._sizes(uids)
        done = 0
        started = last_line = time.monotonic()
        for batch in plan_batches(uids, sizes, self.account.batch_size):
            if self.stop.is_set():
                break
            done += self._batch(folder, uidvalidity, batch)
            if time.monotonic() - last_line >= PROGRESS_EVERY:
                last_line = time.monotonic()
                log.info("imap %s/%s: %d/%d messages", name, folder, done, len(uids))
        if len(uids) > self.account.batch_size:
            elapsed = time.monotonic() - started
            log.info("imap %s/%s: %d/%d messages in %.1fs", name, folder, done, len(uids), elapsed)
        return done

    def _sizes(self, uids: list[int]) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), SIZE_CHUNK):
            chunk = uids[start : start + SIZE_CHUNK]
            found = self.client.fetch(chunk, ["RFC822.SIZE"])
            sizes.update((uid, int(data.get(b"RFC822.SIZE", 0))) for uid, data in found.items())
        return sizes

    def _batch(self, folder: str, uidvalidity: int, batch: list[int]) -> int:
        name = self.account.name
        # Some may have been expunged since SEARCH (a person, another client):
        # the server leaves them out. They are gone for good (UIDs are never
        # reused), so the checkpoint moves past them all the same.
        fetched = self.client.fetch(batch, ["BODY.PEEK[]"])
        raws: list[RawMessage] = []
        uids: list[int] = []
        for uid in batch:
            data = fetched.get(uid)
            body = data.get(b"BODY[]") if data else None
            if body is None:
                continue
            provenance = Provenance(
                source=SOURCE,
                location=location(name, folder),
                mailbox=folder,
                key=delivery_key(name, folder, uidvalidity, uid),
                envelope_to=self.account.owners,  # delivered to the mailbox's owners
            )
            raws.append(RawMessage(bytes(body), provenance))
            uids.append(uid)
        self.store.store(raws, Checkpoint(name, folder, uidvalidity, batch[-1]))
        self.status.stored(folder, len(raws), batch[-1], handled=len(batch))
        if len(uids) < len(batch):
            gone = sorted(set(batch) - set(uids))
            log.info(
                "imap %s/%s: %d expunged before they were fetched (UIDs %s): skipped",
                name,
                folder,
                len(gone),
                ",".join(map(str, gone[:20])) + (",..." if len(gone) > 20 else ""),
            )
        if uids:
            self.after_action(uids)
        return len(raws)

    def after_action(self, uids: Sequence[int]) -> None:
        """Mark seen or move: only ever called for messages already committed."""
        action = self.account.after_action
        if action == "seen":
            self.client.add_flags(uids, [SEEN], silent=True)
        elif action == "move":
            target = self.account.move_to
            if self.client.has_capability("MOVE"):
                self.client.move(uids, target)
                return
            self.client.copy(uids, target)
            self.client.delete_messages(uids, silent=True)
            if self.client.has_capability("UIDPLUS"):
                self.client.uid_expunge(uids)
            else:
                self.client.expunge()

    def finish_after_action(self, last_uid: int) -> None:
        """Redo the action for stored messages a crash left behind (up to the checkpoint).

        Every message in the folder at or below the checkpoint is stored, so
        moving it is always right; for \\Seen it overrides, once per start,
        an unread mark a person set on an already-bridged message.
        """
        action = self.account.after_action
        if action == "none":
            return
        criteria = ["UID", f"1:{last_uid}"]
        if action == "seen":
            criteria = ["UNSEEN", *criteria]
        left = sorted(u for u in self.client.search(criteria) if u <= last_uid)
        if not left:
            return
        log.info(
            "imap %s: finishing %s for %d stored messages", self.account.name, action, len(left)
        )
        for start in range(0, len(left), 500):
            self.after_action(left[start : start + 500])


def plan_batches(uids: list[int], sizes: dict[int, int], batch_size: int) -> list[list[int]]:
    """Split `uids` into batches of at most `batch_size` messages and MAX_BATCH_BYTES."""
    limit = max(1, min(batch_size, MAX_BATCH))
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and (len(current) >= limit or total + size > MAX_BATCH_BYTES):
            batches.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        batches.append(current)
    return batches
