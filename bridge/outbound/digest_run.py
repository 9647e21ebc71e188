"""One digest run, from the CLI (sync) or the daemon's scheduler (async).

Plan once, then in batches: prepare (read), record (write: claim + enqueue,
committed per batch). A run killed between batches loses only the batch in
flight, which the next run does again; nobody gets two digests a period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.errors import AddressError, ConfigError
from bridge.i18n import zone
from bridge.outbound.compose import parse_address
from bridge.outbound.digest_render import ItemCache, Reader, digest_message, reply_addresses
from bridge.outbound.digests import (
    EMPTY,
    FAILED,
    QUEUED,
    Due,
    Outgoing,
    Plan,
    mailed_unsubscribes,
    plan,
    record,
)
from bridge.outbound.keys import signing_key
from bridge.signing import Signer
from bridge.store.blobs import unpack_body_with_raw
from bridge.store.runner import StoreRunner
from bridge.store.tables import Message, RawBlob

log = logging.getLogger(__name__)

BATCH = 100
# After a restart, unsubscribe mails of the last day are read again; each is
# acted on once (digests.mailed_unsubscribes claims a row for it).
MAIL_LOOKBACK = timedelta(days=1)
CHUNK = 500


@dataclass(slots=True)
class RunReport:
    """What a run did: counts by status, and who got nothing and why."""

    due: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)  # by mail, before this run
    last_skipped_id: int = 0  # the unsubscribe mails read so far

    def add(self, counts: dict[str, int], items: Sequence[Outgoing]) -> None:
        for status, n in counts.items():
            self.counts[status] = self.counts.get(status, 0) + n
        self.failures += [(i.address, i.detail) for i in items if i.status == FAILED]


def sender(config: Config) -> tuple[str, str]:
    """(From address, Message-ID domain); ConfigError when digests cannot be sent."""
    domain = config.bridge.message_id_domain
    address = config.outbound.from_address or config.bridge.address
    if not domain:
        raise ConfigError(config.source, "bridge.message_id_domain", "must be set to send digests")
    if not address:
        raise ConfigError(config.source, "bridge.address", "must be set to send digests")
    return address, domain


def snippets(session: Session, pks: set[int]) -> dict[int, str]:
    """The new text (never the quoted history) of each message in `pks`."""
    found: dict[int, str] = {}
    ordered = sorted(pks)
    conn = session.connection()
    for i in range(0, len(ordered), CHUNK):
        rows = session.execute(
            select(Message.id, Message.body, RawBlob.data)
            .join(RawBlob, RawBlob.sha256 == Message.raw_sha256)
            .where(Message.id.in_(ordered[i : i + CHUNK]))
        )
        for pk, body, raw in rows:
            found[pk] = unpack_body_with_raw(conn, body, raw).new_text
    return found


def prepare(
    session: Session,
    config: Config,
    found: Plan,
    batch: Sequence[Due],
    signer: Signer,
    keep_messages: bool = False,
) -> list[Outgoing]:
    """Each person's digest as mail (its bytes; the message too for previews), or why not."""
    from_address, domain = sender(config)
    names = {s.slug: s.name or s.slug for s in config.spaces}
    contents = [(due, found.content(due, names, config.digest.max_threads)) for due in batch]
    texts = snippets(session, {i.newest_pk for _, c in contents for i in c.items})
    items: list[Outgoing] = []
    cache: ItemCache = {}
    for due, content in contents:
        person, period = due.person, due.period.name
        try:
            parse_address(person.address)
        except AddressError as exc:  # recorded whether or not there was news for them
            items.append(Outgoing(person.address, period, FAILED, detail=str(exc)))
            continue
        if content.empty:
            items.append(Outgoing(person.address, period, EMPTY))
            continue
        reader = Reader(
            person.address,
            person.name,
            person.language,
            zone(person.timezone, config.web.default_timezone),
            person.frequency,
        )
        reply = None
        if config.bridge.address and config.digest.reply_days:
            expires = found.now.date() + timedelta(days=config.digest.reply_days)
            reply = reply_addresses(signer, config.bridge.address, person.address, expires)
        try:
            message, data = digest_message(
                content,
                reader,
                texts,
                signer=signer,
                base_url=config.web.public_url,
                from_address=from_address,
                message_id_domain=domain,
                now=found.now,
                cache=cache,
                reply=reply,
            )
        except (AddressError, ValueError) as exc:
            log.warning("digest for %r not sent: %s", person.address, exc)
            items.append(
                Outgoing(person.address, period, FAILED, len(content.items), detail=str(exc))
            )
            continue
        kept = message if keep_messages else None
        items.append(Outgoing(person.address, period, QUEUED, len(content.items), kept, data))
    return items


def _batches(due: list[Due], size: int) -> list[list[Due]]:
    return [due[i : i + size] for i in range(0, len(due), size)]


def run(
    engine: Engine,
    config: Config,
    now: datetime,
    *,
    only: str | None = None,
    force: bool = False,
    batch: int = BATCH,
) -> RunReport:
    """A whole run, for the command line."""
    sender(config)
    with Session(engine) as session, session.begin():
        signer = Signer(signing_key(session, config, now))
        last, off = mailed_unsubscribes(session, signer, 0, now - MAIL_LOOKBACK, now)
    with Session(engine) as session:
        found = plan(session, config, now, only=only, force=force)
    report = RunReport(due=len(found.due), unsubscribed=off, last_skipped_id=last)
    for part in _batches(found.due, batch):
        with Session(engine) as session:
            items = prepare(session, config, found, part, signer)
        with Session(engine) as session, session.begin():
            report.add(record(session, items, now), items)
    return report


async def run_async(
    store: StoreRunner,
    config: Config,
    now: datetime,
    *,
    batch: int = BATCH,
    skipped_after: int | None = None,
) -> RunReport:
    """A whole run, for the daemon: reads in the pool, writes through the one writer.

    `skipped_after` is the `last_skipped_id` of the previous run (None at
    start: look back a day for unsubscribe mails).
    """
    sender(config)

    def prologue(session: Session) -> tuple[bytes, int, list[str]]:
        key = signing_key(session, config, now)
        after = skipped_after or 0
        return key, *mailed_unsubscribes(session, Signer(key), after, now - MAIL_LOOKBACK, now)

    key, last, off = await store.write(prologue)
    signer = Signer(key)
    found = await store.read(lambda s: plan(s, config, now))
    report = RunReport(due=len(found.due), unsubscribed=off, last_skipped_id=last)
    for part in _batches(found.due, batch):
        items = await store.read(lambda s, part=part: prepare(s, config, found, part, signer))  # type: ignore[misc]
        counts = await store.write(lambda s, items=items: record(s, items, now))  # type: ignore[misc]
        report.add(counts, items)
    return report
