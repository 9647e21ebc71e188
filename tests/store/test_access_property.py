"""Random company mail, delivered as an MTA would: every route shows each person just their mail.

Hypothesis writes a small company's mail: new threads, reply-all chains that
add and drop Cc, Bcc (the Bcc line only in the sender's own copy; each Bcc
recipient gets a copy as an envelope recipient, without it), forwards to
someone new quoting an earlier message, replies naming earlier ids in
In-Reply-To/References, copies that never reached Bridge, retried deliveries,
subjects that rules put in a members-only or a staff-open space (some rules
private, one private by envelope recipient). The copies go through the SMTP
and LMTP handler's RCPT and DATA and the group committer, in a shuffled
order, some at the same time (so in one batch), on SQLite and PostgreSQL.

The expected set of each person is computed here from those delivery facts
alone: a message is seen by its envelope recipients, by the people its From,
To and Cc name, and by the readers of its space unless it is private; Bcc
names nobody, and nothing else (a thread, References) grants sight. Every
route must agree with it: `store.access` (thread ids, message ids, messages,
`may_see_message`, `thread_views` with counts and dates), `store.browse`
(listings, thread page, the Bcc it shows, raw bytes, the three feeds) and
search; a thread with nothing visible answers like a missing one.
"""

from __future__ import annotations

import asyncio
import itertools
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.smtp import Envelope
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bridge.config import Config, parse_config
from bridge.core.access import Viewer, viewer_for
from bridge.group_commit import GroupCommit
from bridge.ingest.smtp import NO_SUCH_USER, OK, RECIPIENT_OK, BridgeHandler, lmtp_reply
from bridge.search import search
from bridge.store.blobs import Compressor
from bridge.store.db import make_engine
from bridge.store.migrate import upgrade
from bridge.store.read import browse
from bridge.store.runner import StoreRunner
from bridge.store.tables import Delivery, Message, Quarantined
from bridge.store.visibility.access import (
    may_see_message,
    thread_views,
    visible_message_ids,
    visible_messages,
    visible_thread_ids,
)
from tests.conftest import _fresh_pg

COMPANY = "example.com"
POOL = ("ann", "bob", "cat", "dan", "eve", "gus", "hr")
HR = f"hr@{COMPANY}"  # a rule makes every message delivered to HR private
OUTSIDER = "zoe@partner.org"  # not staff; Bridge refuses her at RCPT
WATCHER = f"wes@{COMPANY}"  # staff in no mail at all: reads the staff-open space
STRANGER = "nobody@elsewhere.net"  # in no mail; maybe a member of the staff-open space
WORD = "zanzibar"  # in every body: the search term
START = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)

# Kind of topic -> (the word in its subject, space, private), as the rules below decide.
KINDS: dict[str, tuple[str, str | None, bool]] = {
    "plain": ("", None, False),
    "deal": ("DEAL", "deals", False),
    "secret": ("CONFIDENTIAL", "deals", True),
    "news": ("NEWS", "news", False),
    "embargo": ("EMBARGO", "news", True),
}
TOPICS = ("Budget", "Offsite", "Pricing", "Hiring", "Roadmap", "Vendor", "Audit")

RULES = f"""
[[rules]]
name = "secret"
space = "deals"
private = true
[rules.match]
subject = "CONFIDENTIAL"

[[rules]]
name = "deal"
space = "deals"
[rules.match]
subject = "\\\\bDEAL\\\\b"

[[rules]]
name = "embargo"
space = "news"
private = true
[rules.match]
subject = "EMBARGO"

[[rules]]
name = "news"
space = "news"
[rules.match]
subject = "\\\\bNEWS\\\\b"

[[rules]]
name = "hr"
private = true
[rules.match]
envelope_to = ["{HR}"]
"""


def members(values: frozenset[str]) -> str:
    """The `members` line of a space, none when empty (config refuses an empty list)."""
    if not values:
        return ""
    return "members = [" + ", ".join(f'"{v}"' for v in sorted(values)) + "]"


def make_config(deals: frozenset[str], news: frozenset[str]) -> Config:
    text = f"""
[bridge]
staff_domains = ["{COMPANY}"]
[smtp]
domains = ["{COMPANY}"]

[[spaces]]
slug = "deals"
name = "Deals"
{members(deals)}

[[spaces]]
slug = "news"
name = "News"
visibility = "staff"
{members(news)}
{RULES}"""
    return parse_config(tomllib.loads(text), "bridge.toml")


# --- the mail ------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    index: int
    message_id: str
    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    base: str  # the subject without Re:/Fwd:
    subject: str
    kind: str
    date: datetime
    in_reply_to: str | None
    references: tuple[str, ...]
    body: str

    @property
    def named(self) -> frozenset[str]:
        return frozenset((self.sender, *self.to, *self.cc))


@dataclass(frozen=True)
class Copy:
    """One SMTP/LMTP transaction: the bytes and the RCPT TO addresses offered."""

    mail: Mail
    data: bytes
    rcpts: tuple[str, ...]
    protocol: str

    @property
    def accepted(self) -> frozenset[str]:
        return frozenset(r.lower() for r in self.rcpts if is_company(r))


@dataclass
class World:
    people: list[str]
    deals: frozenset[str]
    news: frozenset[str]
    mails: list[Mail] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)  # in arrival order
    groups: list[int] = field(default_factory=list)  # sizes of the concurrent groups

    @property
    def viewers(self) -> list[str]:
        return sorted({*self.people, OUTSIDER, WATCHER, STRANGER})


def is_company(address: str) -> bool:
    return address.lower().endswith("@" + COMPANY)


def display(address: str) -> str:
    return f"{address.split('@')[0].capitalize()} <{address}>"


def render(mail: Mail, *, bcc: bool = False, delivered_to: str | None = None) -> bytes:
    """The message's bytes; the shared form has neither Bcc nor Delivered-To."""
    lines = [f"Delivered-To: {delivered_to}"] if delivered_to else []
    lines += [f"From: {display(mail.sender)}", "To: " + ", ".join(map(display, mail.to))]
    if mail.cc:
        lines.append("Cc: " + ", ".join(map(display, mail.cc)))
    if bcc and mail.bcc:
        lines.append("Bcc: " + ", ".join(map(display, mail.bcc)))
    lines += [
        f"Subject: {mail.subject}",
        f"Date: {format_datetime(mail.date)}",
        f"Message-ID: <{mail.message_id}>",
    ]
    if mail.in_reply_to:
        lines.append(f"In-Reply-To: <{mail.in_reply_to}>")
    if mail.references:
        lines.append("References: " + " ".join(f"<{r}>" for r in mail.references))
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", mail.body]
    return "\r\n".join(lines).encode() + b"\r\n"


def some(draw: st.DrawFn, values: list[str], most: int, least: int = 0) -> list[str]:
    if not values:
        return []
    return draw(st.lists(st.sampled_from(values), min_size=least, max_size=most, unique=True))


def varied_case(draw: st.DrawFn, address: str) -> str:
    """An RCPT TO address as a mailer may spell it."""
    if draw(st.booleans()):
        return address
    local, _, domain = address.partition("@")
    return f"{local.capitalize()}@{domain.upper()}"


@st.composite
def worlds(draw: st.DrawFn) -> World:
    people = [
        f"{p}@{COMPANY}"
        for p in draw(st.lists(st.sampled_from(POOL), min_size=4, max_size=6, unique=True))
    ]
    everyone = [*people, OUTSIDER]
    world = World(
        people=everyone,
        deals=frozenset(some(draw, everyone, 3, least=1)),  # members-only: someone
        news=frozenset(some(draw, [OUTSIDER, STRANGER], 1)),
    )
    for i in range(draw(st.integers(2, 9))):
        world.mails.append(next_mail(draw, world.mails, everyone, i))
    for mail in world.mails:
        world.copies.extend(copies_of(draw, mail))
    assume(world.copies)  # some mail reached Bridge
    world.copies = draw(st.permutations(world.copies))
    left = len(world.copies)
    while left > 0:
        size = min(left, draw(st.integers(1, 4)))
        world.groups.append(size)
        left -= size
    return world


def next_mail(draw: st.DrawFn, mails: list[Mail], everyone: list[str], i: int) -> Mail:
    action = "new" if not mails else draw(st.sampled_from(["new", "reply", "reply", "forward"]))
    date = START + timedelta(hours=5 * i, minutes=draw(st.integers(0, 59)))
    message_id = f"m{i}.{draw(st.integers(1000, 9999))}@mail.{COMPANY}"
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    if action == "new":
        sender = draw(st.sampled_from(everyone))
        others = [p for p in everyone if p != sender]
        to = draw(st.lists(st.sampled_from(others), min_size=1, max_size=2, unique=True))
        cc = some(draw, [p for p in others if p not in to], 2)
        kind = draw(st.sampled_from(sorted(KINDS)))
        base = f"{draw(st.sampled_from(TOPICS))} {i} {KINDS[kind][0]}".strip()
        subject = base
        body = f"{WORD} memo {i} from {sender}."
    else:
        earlier = draw(st.sampled_from(mails))
        parties = [p for p in everyone if p in earlier.named or p in earlier.bcc]
        sender = draw(st.sampled_from(parties if draw(st.integers(0, 4)) else everyone))
        others = [p for p in everyone if p != sender]
        kind, base = earlier.kind, earlier.base
        if action == "reply":
            # Reply-all: the author and the To list, Cc kept with some dropped and some added.
            to = list(dict.fromkeys(p for p in (earlier.sender, *earlier.to) if p != sender))
            to = to or [earlier.sender]
            dropped = set(some(draw, list(earlier.cc), 2))
            cc = [p for p in earlier.cc if p != sender and p not in dropped and p not in to]
            cc += [p for p in some(draw, others, 2) if p not in to and p not in cc]
            subject = f"Re: {base}"
            quoted = "\r\n".join("> " + line for line in earlier.body.split("\r\n"))
            body = (
                f"{WORD} reply {i} from {sender}.\r\n\r\n"
                f"On {earlier.date:%c}, {earlier.sender} wrote:\r\n{quoted}"
            )
            in_reply_to = earlier.message_id
            style = draw(st.sampled_from(["full", "parent", "none"]))
            if style == "full":
                references = (*earlier.references, earlier.message_id)
            elif style == "parent":
                references = (earlier.message_id,)
        else:
            # A forward to someone who was not a party, when there is one.
            new = [p for p in others if p not in parties] or others
            to = [draw(st.sampled_from(new))]
            cc = []
            subject = f"Fwd: {base}"
            body = (
                f"{WORD} forward {i} from {sender}, see below.\r\n\r\n"
                "---------- Forwarded message ---------\r\n"
                f"From: {earlier.sender}\r\nSubject: {earlier.subject}\r\n\r\n{earlier.body}"
            )
            if draw(st.booleans()):
                references = (*earlier.references, earlier.message_id)
    bcc = some(draw, [p for p in everyone if p not in to and p not in cc], 2)
    return Mail(
        i,
        message_id,
        sender,
        tuple(to),
        tuple(cc),
        tuple(bcc),
        base,
        subject,
        kind,
        date,
        in_reply_to,
        references,
        body,
    )


def copies_of(draw: st.DrawFn, mail: Mail) -> list[Copy]:
    """The transactions that bring `mail` to Bridge, as the company's MTA would send them.

    The sender's own copy (the one with the Bcc line) arrives when the sender
    is staff and their sent mail is journaled; every recipient's copy lacks
    the Bcc line. Some copies never arrive; a copy for one recipient carries
    their Delivered-To; the outsider is offered at RCPT and refused.
    """
    found: list[Copy] = []

    def protocol() -> str:
        return draw(st.sampled_from(["smtp", "lmtp"]))

    if is_company(mail.sender) and draw(st.booleans()):
        data = render(mail, bcc=True)
        found.append(Copy(mail, data, (varied_case(draw, mail.sender),), protocol()))
    recipients = list(dict.fromkeys((*mail.to, *mail.cc, *mail.bcc)))
    arrived = [r for r in recipients if not is_company(r) or draw(st.integers(0, 4)) < 4]
    together = draw(st.booleans())  # one transaction for all, or one per mailbox
    if arrived and together:
        rcpts = tuple(varied_case(draw, r) for r in arrived)
        found.append(Copy(mail, render(mail), rcpts, protocol()))
    else:
        for r in arrived:
            data = render(mail, delivered_to=r if is_company(r) else None)
            found.append(Copy(mail, data, (varied_case(draw, r),), protocol()))
    found = [c for c in found if c.accepted]
    if found and draw(st.integers(0, 5)) == 0:
        found.append(draw(st.sampled_from(found)))  # a retried delivery: a new queue id
    return found


# --- the expectation, from the delivery facts alone -----------------------------


@dataclass
class Expectation:
    mails: dict[str, Mail]  # the messages Bridge holds: at least one copy arrived
    holders: dict[str, set[str]]
    private: dict[str, bool]
    received: dict[tuple[str, str], set[bytes]]  # (person, message id) -> their copies


def expectation(world: World) -> Expectation:
    mails: dict[str, Mail] = {}
    holders: dict[str, set[str]] = defaultdict(set)
    received: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    for copy in world.copies:
        mid = copy.mail.message_id
        mails[mid] = copy.mail
        holders[mid].update(copy.accepted)
        for person in copy.accepted:
            received[person, mid].add(copy.data)
    private = {mid: KINDS[m.kind][2] or HR in holders[mid] for mid, m in mails.items()}
    return Expectation(mails, holders, private, received)


def reads_space(world: World, person: str, space: str | None) -> bool:
    if space == "deals":
        return person in world.deals
    if space == "news":
        return is_company(person) or person in world.news
    return False


def expected_ids(world: World, want: Expectation, person: str) -> set[str]:
    """The rule, per message: delivered to them, named in From/To/Cc, or an open space."""
    return {
        mid
        for mid, mail in want.mails.items()
        if person in want.holders[mid]
        or person in mail.named
        or (reads_space(world, person, KINDS[mail.kind][1]) and not want.private[mid])
    }


# --- delivery through the SMTP/LMTP handler and the group committer ------------


async def deliver(engine: Engine, config: Config, world: World) -> None:
    runner = StoreRunner(engine)
    committer = GroupCommit(
        runner,
        Compressor(),
        max_batch=config.smtp.batch_size,
        max_wait=config.smtp.batch_wait,
        rules=lambda: config.ruleset,
    )
    committer.start()
    handlers = {
        p: BridgeHandler(committer.submit, lambda: config.smtp, f"{p}://127.0.0.1:2525", p)
        for p in ("smtp", "lmtp")
    }
    try:
        copies = iter(world.copies)
        for size in world.groups:
            group = list(itertools.islice(copies, size))
            await asyncio.gather(*(transaction(handlers[c.protocol], c) for c in group))
    finally:
        await committer.close()
        runner.close()


async def transaction(handler: BridgeHandler, copy: Copy) -> None:
    server, session = cast(Any, None), cast(Any, None)
    envelope = Envelope()
    envelope.mail_from = copy.mail.sender
    for rcpt in copy.rcpts:
        reply = await handler.handle_RCPT(server, session, envelope, rcpt, [])
        assert reply == (RECIPIENT_OK if is_company(rcpt) else NO_SUCH_USER)
    assert envelope.rcpt_tos
    envelope.content = envelope.original_content = copy.data
    reply = await handler.handle_DATA(server, session, envelope)
    if copy.protocol == "lmtp":
        assert reply == "\r\n".join(lmtp_reply(r, OK) for r in envelope.rcpt_tos)
    else:
        assert reply == OK


# --- the store, per example ------------------------------------------------------

_examples = itertools.count()


@pytest.fixture
def fresh_store(engine: Engine, tmp_path: Path) -> Iterator[Callable[[], Engine]]:
    """Makes an empty, migrated store on the backend of `engine`, one per example."""
    made: list[Engine] = []

    def make() -> Engine:
        if engine.dialect.name == "sqlite":
            eng = make_engine(str(tmp_path / f"example-{next(_examples)}.db"))
            upgrade(eng)
        else:
            eng = _fresh_pg(engine.url.render_as_string(hide_password=False))
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.dispose()


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class Stored:
    """What the store made of the mail: only ids, threads and dates are read from it."""

    pk: dict[str, int]  # message id -> pk
    thread: dict[int, int]  # pk -> thread id
    missing_thread: int
    missing_pk: int

    @property
    def threads(self) -> set[int]:
        return set(self.thread.values())


def stored(session: Session, world: World, want: Expectation) -> Stored:
    rows = session.execute(select(Message.message_id, Message.id, Message.thread_id)).all()
    pk = {mid: int(p) for mid, p, _t in rows}
    assert set(pk) == set(want.mails), "every message that arrived is stored once"
    assert session.execute(select(func.count()).select_from(Quarantined)).scalar() == 0
    deliveries = session.execute(select(func.count()).select_from(Delivery)).scalar()
    assert deliveries == len(world.copies)
    thread = {int(p): int(t) for _mid, p, t in rows}
    return Stored(
        pk, thread, max(thread.values(), default=0) + 1000, max(pk.values(), default=0) + 1000
    )


# --- the property -----------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)
@given(world=worlds())
def test_every_route_shows_each_person_exactly_the_messages_the_rule_grants(
    fresh_store: Callable[[], Engine], world: World
) -> None:
    engine = fresh_store()
    config = make_config(world.deals, world.news)
    asyncio.run(deliver(engine, config, world))
    want = expectation(world)
    seen_by = {person: expected_ids(world, want, person) for person in world.viewers}
    with Session(engine) as session:
        store = stored(session, world, want)
        for person, seen in seen_by.items():
            who = viewer_for(person, config.spaces, config.staff_domains)
            check_person(session, world, want, store, who, seen)
    note_cases(world, want, store, seen_by)


def note_cases(
    world: World, want: Expectation, store: Stored, seen_by: dict[str, set[str]]
) -> None:
    """What the example held, for --hypothesis-show-statistics."""
    for mid, mail in want.mails.items():
        if mail.bcc:
            event("a Bcc")
        if any(b not in want.holders[mid] for b in mail.bcc):
            event("a Bcc recipient without a copy")
        if mail.subject.startswith("Fwd:"):
            event("a forward")
        if want.private[mid] and not KINDS[mail.kind][2]:
            event("private by the envelope rule")
    for seen in seen_by.values():
        shown = {store.thread[store.pk[mid]] for mid in seen}
        hidden = {store.thread[store.pk[mid]] for mid in set(want.mails) - seen}
        if shown & hidden:
            event("a thread partly hidden from someone")
    if len(world.groups) < len(world.copies):
        event("copies delivered together")


def check_person(
    session: Session,
    world: World,
    want: Expectation,
    store: Stored,
    who: Viewer,
    seen_ids: set[str],
) -> None:
    mail_of = {store.pk[mid]: want.mails[mid] for mid in want.mails}
    seen = {store.pk[mid] for mid in seen_ids}
    by_thread: dict[int, list[int]] = defaultdict(list)
    for pk in sorted(seen, key=lambda p: mail_of[p].date):
        by_thread[store.thread[pk]].append(pk)
    threads = set(by_thread)
    everything = [*sorted(store.threads), store.missing_thread]
    note = f"{who.address}: expected {sorted(seen_ids)}"

    # store.access
    assert visible_thread_ids(session, who) == threads, note
    assert visible_thread_ids(session, who, everything) == threads, note
    for pk in [*mail_of, store.missing_pk]:
        assert may_see_message(session, who, pk) == (pk in seen), (note, pk)
    views = thread_views(session, who, everything)
    assert set(views) == threads, note
    for tid in everything:
        shown = by_thread.get(tid, [])
        assert list(visible_message_ids(session, who, tid)) == shown, (note, tid)
        assert [m.id for m in visible_messages(session, who, tid)] == shown, (note, tid)
        if not shown:
            check_absent(session, who, tid)
            continue
        dates = [mail_of[pk].date for pk in shown]
        subjects = {mail_of[pk].subject for pk in shown}
        view = views[tid]
        assert view.message_count == len(shown), (note, tid)
        assert (aware(view.first_date), aware(view.last_date)) == (min(dates), max(dates))
        assert view.subject in subjects, (note, tid)
        check_thread_page(session, who, tid, shown, mail_of, note)
        feed = browse.newest_messages(session, who, thread_id=tid, limit=1000)
        assert [e.message.pk for e in feed] == shown[::-1], (note, tid)
        assert {e.thread_subject for e in feed} <= subjects

    # store.browse: the listing, the message routes, the feeds
    listing, total = browse.thread_summaries(session, who, limit=1000)
    last = {tid: mail_of[pks[-1]].date for tid, pks in by_thread.items()}
    assert [s.id for s in listing] == sorted(threads, key=lambda t: last[t], reverse=True), note
    assert total == len(threads), note
    for row in listing:
        shown = by_thread[row.id]
        assert row.message_count == len(shown), (note, row.id)
        assert aware(row.last_date) == last[row.id], (note, row.id)
        assert row.subject in {mail_of[pk].subject for pk in shown}, (note, row.id)
        senders = {mail_of[pk].sender for pk in shown}
        assert {p.address for p in row.participants} <= senders, (note, row.id)
    in_deals = {store.thread[pk] for pk in seen if KINDS[mail_of[pk].kind][1] == "deals"}
    deals, deals_total = browse.thread_summaries(session, who, space="deals", limit=1000)
    assert {s.id for s in deals} == in_deals and deals_total == len(in_deals), note
    for pk in [*mail_of, store.missing_pk]:
        check_raw(session, want, who, pk, mail_of.get(pk), pk in seen)
    newest = browse.newest_messages(session, who, limit=1000)
    assert [e.message.pk for e in newest] == sorted(
        seen, key=lambda p: mail_of[p].date, reverse=True
    ), note
    space_feed = browse.newest_messages(session, who, space="deals", limit=1000)
    assert {e.message.pk for e in space_feed} == {
        pk for pk in seen if store.thread[pk] in in_deals
    }, note

    # search: every body holds WORD, so the reader's hits are their visible threads
    found = search(session, WORD, viewer=who, limit=1000)
    assert {h.thread_id for h in found.hits} == threads, note
    assert found.total_threads == len(threads) and not found.more, note
    for hit in found.hits:
        shown = by_thread[hit.thread_id]
        assert hit.matches == hit.thread_messages == len(shown), (note, hit.thread_id)
        assert hit.message_id in {mail_of[pk].message_id for pk in shown}, note
        assert hit.subject in {mail_of[pk].subject for pk in shown}, note


def check_absent(session: Session, who: Viewer, tid: int) -> None:
    """A thread with nothing visible answers exactly like a missing one."""
    assert browse.thread_detail(session, who, tid) is None
    assert browse.newest_messages(session, who, thread_id=tid) == []


def check_thread_page(
    session: Session,
    who: Viewer,
    tid: int,
    shown: list[int],
    mail_of: dict[int, Mail],
    note: str,
) -> None:
    detail = browse.thread_detail(session, who, tid)
    assert detail is not None, (note, tid)
    assert sorted(m.pk for m in detail.messages) == sorted(shown), (note, tid)
    assert detail.last_date == mail_of[shown[-1]].date, (note, tid)
    assert detail.subject in {mail_of[pk].subject for pk in shown}, (note, tid)
    named = {a for pk in shown for a in mail_of[pk].named}
    assert {p.address for p in detail.participants} <= named, (note, tid)
    for message in detail.messages:
        mail = mail_of[message.pk]
        bcc = {p.address for p in message.bcc}
        # All of it to the sender, themselves to a Bcc recipient, nothing to anyone else.
        allowed = set(mail.bcc) if who.address == mail.sender else {who.address} & set(mail.bcc)
        assert bcc <= allowed, (note, message.pk, bcc)
        assert message.parent_pk is None or message.parent_pk in shown


def check_raw(
    session: Session,
    want: Expectation,
    who: Viewer,
    pk: int,
    mail: Mail | None,
    visible: bool,
) -> None:
    """The raw message: their own copy if they hold one, else the copy without per-copy lines."""
    raw = browse.original_bytes(session, who, pk)
    if not visible or mail is None:
        assert raw is None, (who.address, pk)
        return
    assert raw is not None, (who.address, pk)
    own = want.received.get((who.address, mail.message_id))
    if own:
        assert raw in own, (who.address, pk)
    else:
        assert raw == render(mail), (who.address, pk)
    if b"\r\nBcc:" in raw:
        assert who.address == mail.sender, (who.address, pk)
    if raw.startswith(b"Delivered-To:"):
        assert raw.startswith(f"Delivered-To: {who.address}\r\n".encode()), (who.address, pk)
