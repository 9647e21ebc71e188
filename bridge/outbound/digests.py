"""Digest runs, store side: who is due, what happened since, and the claim-then-enqueue step.

A run has three steps, each a plain function taking a Session:

1. `plan` reads who is due and every message dated in the widest window
   any of them needs, with each message's access facts, in a few batched
   queries (never one access query per person).
2. `prepare` builds each person's digest (`bridge.core.outgoing.digest`), reads the
   new text it quotes and renders the mail (`digest_render`).
3. `record` claims the person's unique `digest_sends` row and enqueues the
   mail in the same transaction: a second daemon, or a rerun after a crash,
   finds the row taken and sends nothing more.

Addresses that do not parse, and empty digests, are recorded too (status
"failed" or "empty", with the reason), so each person has one row a period.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.core.access import MessageFacts, Viewer, normalize_address, viewer_for
from bridge.core.admin_rules.loops import OWN_MAIL_RULE, UNSUBSCRIBE_SUBJECT
from bridge.core.outgoing import digest as core
from bridge.core.outgoing.digest import NewMessage, Period, ThreadInfo
from bridge.i18n import zone
from bridge.outbound import outbox
from bridge.outbound.digest_render import read_frequency_token
from bridge.signing import Signer
from bridge.store.db import insert_ignore
from bridge.store.read import marks
from bridge.store.read.reading import raw_bytes
from bridge.store.tables import DigestSend, Message, Person, Skipped, Thread, User, table
from bridge.store.visibility.access import message_facts

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUED, EMPTY, SKIPPED, FAILED = "queued", "empty", "skipped", "failed"
# Someone who never had a digest gets their first one close to a send time:
# a first start or a long outage must not send everybody one at 3 a.m.
FIRST_DIGEST_GRACE = timedelta(hours=1)
CHUNK = 500


@dataclass(frozen=True, slots=True)
class DigestPerson:
    """Someone who gets digests, with their settings resolved."""

    address: str
    name: str
    language: str
    timezone: str
    frequency: str
    last_digest_at: datetime | None
    viewer: Viewer


@dataclass(frozen=True, slots=True)
class Due:
    person: DigestPerson
    period: Period
    since: datetime


@dataclass(slots=True)
class Plan:
    """Everything a run needs from the store, read once for everybody."""

    now: datetime
    due: list[Due] = field(default_factory=list)
    threads: dict[int, ThreadInfo] = field(default_factory=dict)
    messages: dict[int, list[NewMessage]] = field(default_factory=dict)
    by_party: dict[str, set[int]] = field(default_factory=dict)
    by_space: dict[str, list[int]] = field(default_factory=dict)
    # Each person's followed and muted threads (bridge.store.read.marks).
    watches: dict[str, dict[int, str]] = field(default_factory=dict)
    _merged: dict[frozenset[str], list[int]] = field(default_factory=dict)

    def spaced(self, spaces: frozenset[str]) -> list[int]:
        """Threads with news in any of `spaces`, most messages first (cached per set)."""
        found = self._merged.get(spaces)
        if found is None:
            tids = {tid for space in spaces for tid in self.by_space.get(space, ())}
            found = sorted(tids, key=lambda t: (-len(self.messages[t]), -t))
            self._merged[spaces] = found
        return found

    def content(
        self, due: Due, space_names: dict[str, str], max_threads: int
    ) -> core.DigestContent:
        person = due.person
        watch = self.watches.get(person.address, {})
        return core.build_digest(
            person.viewer,
            due.since,
            self.threads,
            self.messages,
            self.by_party.get(person.address, set()),
            self.spaced(person.viewer.spaces),
            space_names,
            max_threads,
            followed={tid for tid, w in watch.items() if w == marks.FOLLOW},
            muted={tid for tid, w in watch.items() if w == marks.MUTE},
        )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One person's result for one period: a message to enqueue, or why there is none."""

    address: str
    period: str
    status: str
    threads: int = 0
    message: EmailMessage | None = None
    data: bytes = b""  # the message's verified wire bytes
    detail: str = ""


# -- who -------------------------------------------------------------------------


def people(session: Session, config: Config, only: str | None = None) -> list[DigestPerson]:
    """Everyone with an address who is staff, in a space, or has their own settings."""
    users = {u.address.lower(): u for u in session.execute(select(User)).scalars()}
    names: dict[str, str] = {}
    query = select(Person.address, Person.name)
    if only is not None:
        query = query.where(Person.address == normalize_address(only))
    for address, name in session.execute(query):
        names.setdefault(normalize_address(address or ""), name or "")
    wanted = {normalize_address(only)} if only is not None else set(names) | set(users)
    found = []
    for address in sorted(wanted):
        if not address and address not in users:
            continue  # a sender known by name only: nobody to write to
        viewer = viewer_for(address, config.spaces, config.staff_domains)
        user = users.get(address)
        if user is None and not viewer.is_staff and not viewer.spaces and only is None:
            continue
        readable = [s for s in config.spaces if s.slug in viewer.spaces]
        own = user.digest_frequency if user else ""
        found.append(
            DigestPerson(
                address=address,
                name=names.get(address, ""),
                language=(user.language if user else "") or config.web.default_language,
                timezone=(user.timezone if user else "") or config.web.default_timezone,
                frequency=core.frequency_for(own, readable, config.digest.default_frequency),
                last_digest_at=user.last_digest_at if user else None,
                viewer=viewer,
            )
        )
    return found


def due_people(
    session: Session,
    config: Config,
    now: datetime,
    *,
    only: str | None = None,
    force: bool = False,
    preview: bool = False,
) -> list[Due]:
    """People whose current period has no digest row yet.

    `force` ignores the send hour (the period is the one `now` is in), for
    `bridge digest send --now`; `preview` also ignores digests already
    claimed, and shows people with digests off what a weekly one would say.
    """
    hour = 0 if force or preview else config.digest.send_hour
    candidates: list[Due] = []
    for person in people(session, config, only):
        if preview and person.frequency == "off":
            person = replace(person, frequency="weekly")
        tz = zone(person.timezone, config.web.default_timezone)
        period = core.current_period(person.frequency, now, tz, hour, config.digest.weekly_day)
        if period is None:
            continue
        if (
            person.last_digest_at is None
            and not (force or preview)
            and now - period.send_at > FIRST_DIGEST_GRACE
        ):
            continue  # a newcomer's first digest waits for a send hour, not for a restart
        since = core.window_start(person.frequency, period, person.last_digest_at)
        candidates.append(Due(person, period, since))
    if preview:
        return candidates
    taken: set[tuple[str, str]] = set()
    periods = sorted({d.period.name for d in candidates})
    for part in _chunks(periods):
        rows = session.execute(
            select(DigestSend.address, DigestSend.period).where(DigestSend.period.in_(part))
        )
        taken.update((a, p) for a, p in rows)
    return [d for d in candidates if (d.person.address, d.period.name) not in taken]


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


# -- what happened ----------------------------------------------------------------


def plan(
    session: Session,
    config: Config,
    now: datetime,
    *,
    only: str | None = None,
    force: bool = False,
    preview: bool = False,
) -> Plan:
    """Who is due and the activity their digests draw on."""
    due = due_people(session, config, now, only=only, force=force, preview=preview)
    result = Plan(now, due)
    if not result.due:
        return result
    result.watches = marks.watches(session, [d.person.address for d in result.due])
    start = min(d.since for d in result.due)
    rows = session.execute(
        select(
            Message.id,
            Message.thread_id,
            Message.sort_date,
            Message.subject,
            Person.address,
            Person.name,
        )
        .outerjoin(Person, Person.id == Message.sender_id)
        .where(Message.sort_date >= start, Message.sort_date <= now)
        .order_by(Message.sort_date.desc(), Message.id.desc())
    ).all()
    if not rows:
        return result
    tids = sorted({r.thread_id for r in rows})
    roots: dict[int, str | None] = {}
    for part in _chunks(tids):
        for t in session.execute(select(Thread).where(Thread.id.in_(part))).scalars():
            result.threads[t.id] = ThreadInfo(t.id, t.subject, t.first_date, None)
            roots[t.id] = t.root_message_id
    facts, root_facts, by_party = _thread_facts(session, tids, roots)
    for tid, info in result.threads.items():
        result.threads[tid] = replace(info, root=root_facts.get(tid))
    by_space: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        if r.thread_id not in result.threads or r.id not in facts:
            continue
        message = NewMessage(
            pk=r.id,
            thread_id=r.thread_id,
            date=r.sort_date,
            sender=normalize_address(r.address or ""),
            sender_name=r.name or "",
            subject=r.subject or "",
            facts=facts[r.id],
        )
        result.messages.setdefault(r.thread_id, []).append(message)
        if message.facts.space and not message.facts.private:
            by_space[message.facts.space].add(r.thread_id)
    result.by_party = by_party
    result.by_space = {space: sorted(found) for space, found in by_space.items()}
    return result


def _thread_facts(
    session: Session, tids: list[int], roots: dict[int, str | None]
) -> tuple[dict[int, MessageFacts], dict[int, MessageFacts], dict[str, set[int]]]:
    """Access facts of every message of `tids` (any date), their roots', and who is party.

    A person is party to a thread when one of its messages, new or old, was
    delivered to them or names them: its news go first in their digest.
    """
    shape: dict[int, tuple[int, str]] = {}
    for part in _chunks(tids):
        query = select(Message.id, Message.thread_id, Message.message_id).where(
            Message.thread_id.in_(part)
        )
        shape.update((pk, (tid, mid)) for pk, tid, mid in session.execute(query))
    facts: dict[int, MessageFacts] = {}
    pks = sorted(shape)
    for i in range(0, len(pks), CHUNK * 10):
        facts.update(message_facts(session, pks[i : i + CHUNK * 10]))
    root_facts: dict[int, MessageFacts] = {}
    by_party: dict[str, set[int]] = {}
    for pk, found in facts.items():
        tid, mid = shape[pk]
        if roots.get(tid) == mid:
            root_facts[tid] = found
        for address in found.holders | found.named:
            by_party.setdefault(address, set()).add(tid)
    return facts, root_facts, by_party


# -- claim and enqueue -------------------------------------------------------------


def record(session: Session, items: Sequence[Outgoing], now: datetime) -> dict[str, int]:
    """Claim each person's period and enqueue their mail with it; counts by status.

    A row someone else already claimed (another daemon, an earlier run) is
    counted as "taken" and nothing is enqueued for it.
    """
    counts: dict[str, int] = defaultdict(int)
    claim = insert_ignore(session.get_bind().dialect.name, table(DigestSend)).returning(
        table(DigestSend).c.id
    )
    for item in items:
        row = {
            "address": item.address,
            "period": item.period,
            "status": item.status,
            "threads": item.threads,
            "outbox_id": None,
            "detail": item.detail[:2000],
            "created_at": now,
        }
        claimed = session.execute(claim, [row]).scalar()
        if claimed is None:
            counts["taken"] += 1
            continue
        counts[item.status] += 1
        if not item.data:
            continue
        outbox_id = outbox.enqueue(session, item.data, recipients=[item.address], now=now)
        session.execute(
            update(DigestSend).where(DigestSend.id == claimed).values(outbox_id=outbox_id)
        )
        _touch_user(session, item.address, now)
    return dict(counts)


def _touch_user(session: Session, address: str, now: datetime) -> None:
    _ensure_user(session, address, now)
    session.execute(update(User).where(User.address == address).values(last_digest_at=now))


def _ensure_user(session: Session, address: str, now: datetime) -> None:
    # Insert-or-ignore, then update: safe when two writers add the same person.
    statement = insert_ignore(session.get_bind().dialect.name, table(User))
    session.execute(statement, [_user_row(address, now)])


def _user_row(address: str, now: datetime) -> dict[str, object]:
    return {
        "address": address,
        "language": "",
        "timezone": "",
        "digest_frequency": "",
        "feed_epoch": 0,
        "last_digest_at": None,
        "created_at": now,
    }


def sends(session: Session, period: str | None = None) -> list[DigestSend]:
    """Digest rows, newest first (for `bridge digest` and admins)."""
    query = select(DigestSend).order_by(DigestSend.id.desc())
    if period is not None:
        query = query.where(DigestSend.period == period)
    return list(session.execute(query).scalars())


def set_frequency(session: Session, address: str, frequency: str, now: datetime) -> None:
    """Set a person's own digest frequency (from a signed link or their settings)."""
    address = normalize_address(address)
    _ensure_user(session, address, now)
    session.execute(update(User).where(User.address == address).values(digest_frequency=frequency))


# -- unsubscribe by mail ---------------------------------------------------------------


def mailed_unsubscribes(
    session: Session, signer: Signer, after_id: int, since: datetime, now: datetime
) -> tuple[int, list[str]]:
    """Act on "unsubscribe TOKEN" mails kept since `since` (Skipped id > `after_id`).

    The digest's List-Unsubscribe mailto carries the same signed token as
    its https link, so a forged From unsubscribes nobody. Each mail is acted
    on once: a DigestSend row named after it ("unsubscribe:<id>", status
    "skipped") is claimed first, so the mails read again after a restart
    cannot undo a later choice made in the viewer's settings. Returns (the
    last id seen, the addresses turned off).
    """
    rows = session.execute(
        select(Skipped.id, Skipped.raw_sha256)
        .where(Skipped.rule == OWN_MAIL_RULE, Skipped.id > after_id, Skipped.created_at >= since)
        .order_by(Skipped.id)
    ).all()
    done: list[str] = []
    last = after_id
    for skipped_id, sha256 in rows:
        last = skipped_id
        head = raw_bytes(session, sha256).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        subject = str(BytesHeaderParser(policy=policy.default).parsebytes(head)["Subject"] or "")
        match = UNSUBSCRIBE_SUBJECT.match(subject)
        found = read_frequency_token(signer, match.group(1)) if match and match.group(1) else None
        if found is None or found[1] != "off":
            continue
        address = normalize_address(found[0])
        claim = insert_ignore(session.get_bind().dialect.name, table(DigestSend)).values(
            address=address,
            period=f"unsubscribe:{skipped_id}",
            status="skipped",
            threads=0,
            detail="unsubscribed by mail",
            created_at=now,
        )
        if session.execute(claim).rowcount != 1:  # type: ignore[attr-defined]
            continue  # acted on before
        set_frequency(session, address, "off", now)
        done.append(address)
    return last, done
