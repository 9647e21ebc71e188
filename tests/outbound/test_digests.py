"""Digest runs on real imported mail, on SQLite and PostgreSQL.

Enron's maildir gives the "West Position" (private, in gas), "SoCal Gas"
(gas), a spam mail and the reply-all "Heads up" (open to all staff) threads;
the notmuch lkml files a RapidIO thread whose Neuling messages rules make
private. What each person should see is asked of `store.access` (SQL, one
thread at a time), a different path from the digest's batched pass.
"""

from __future__ import annotations

import threading
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from bridge.config import Config, parse_config
from bridge.core.access import Viewer, viewer_for
from bridge.core.outgoing.digest import first_lines
from bridge.ingest.files import run_import
from bridge.outbound.digest_run import run, snippets
from bridge.outbound.digests import plan, set_frequency
from bridge.outbound.mailer import Mailer
from bridge.store.read.reading import thread_messages
from bridge.store.runner import StoreRunner
from bridge.store.tables import DigestSend, Message, Outbox, Person, Thread, User
from bridge.store.visibility.access import grant_reasons, visible_message_ids, visible_messages
from tests.access_setup import SPACES_AND_RULES
from tests.conftest import DATA
from tests.outbound.test_outbox import config as relay_config
from tests.smtp_support import Relay, free_port

ENRON = DATA / "enron" / "maildir"
LKML = DATA / "threads" / "notmuch" / "lkml"
INTRUDER = DATA / "web-api" / "intruder.eml"

CONFIG = (
    """
[bridge]
message_id_domain = "bridge.example.com"
address = "bridge@example.com"
staff_domains = ["enron.com"]
[web]
base_url = "https://bridge.example.com"
[digest]
default_frequency = "weekly"
send_hour = 7
weekly_day = "saturday"
"""
    + SPACES_AND_RULES
)


# Saturday 2001-12-08, after 07:00 UTC: the SoCal (Nov 20) and West (Dec 7)
# threads are news for people whose last digest was mid-November.
ENRON_RUN = datetime(2001, 12, 8, 9, 0, tzinfo=UTC)
LAST_DIGEST = datetime(2001, 11, 15, 7, 0, tzinfo=UTC)
# Saturday 2002-02-02: the "Heads up" thread (Jan 30) is this week's news.
HEADS_RUN = datetime(2002, 2, 2, 7, 30, tzinfo=UTC)
# The RapidIO thread (June to August 2010), read on Saturday 2010-08-07.
RIO_RUN = datetime(2010, 8, 7, 9, 0, tzinfo=UTC)
RIO_LAST = datetime(2010, 7, 20, 7, 0, tzinfo=UTC)

PEOPLE = [
    "heather.dunton@enron.com",
    "k..allen@enron.com",
    "pallen@enron.com",
    "kam.keiser@enron.com",
    "outside.analyst@example.org",
    "someone.new@enron.com",
    "thomas.moll@sysgo.com",
    "observer@example.org",
    "nobody@example.net",
]


def load(text: str = CONFIG) -> Config:
    return parse_config(tomllib.loads(text), "bridge.toml")


@pytest.fixture
def store(engine: Engine) -> Engine:
    config = load()
    result = run_import(engine, [str(ENRON), str(LKML)], workers=1, rules=config.ruleset)
    assert result.tally.outcomes["quarantined"] == 0
    return engine


def seed_users(engine: Engine, addresses: list[str], last: datetime | None) -> None:
    with Session(engine) as session, session.begin():
        for address in addresses:
            session.merge(User(address=address, created_at=last or ENRON_RUN, last_digest_at=last))


def expected(
    session: Session, config: Config, address: str, since: datetime, now: datetime
) -> dict[int, int]:
    """thread id -> new messages `address` may see and did not write, by `store.access`."""
    viewer = viewer_for(address, config.spaces, config.staff_domains)
    found: dict[int, int] = {}
    for tid in session.execute(select(Thread.id)).scalars():
        new = [
            m
            for m in visible_messages(session, viewer, tid)
            if since <= m.sort_date <= now and _sender(session, m) != address
        ]
        if new:
            found[tid] = len(new)
    return found


def _sender(session: Session, message: Message) -> str:
    if message.sender_id is None:
        return ""
    return session.get_one(Person, message.sender_id).address.lower()


def digest_of(session: Session, config: Config, address: str, now: datetime) -> Any:
    found = plan(session, config, now, only=address, preview=True)
    (due,) = found.due
    names = {s.slug: s.name for s in config.spaces}
    return due, found.content(due, names, config.digest.max_threads)


@pytest.mark.parametrize(
    ("now", "last", "with_news"), [(ENRON_RUN, LAST_DIGEST, 2), (RIO_RUN, RIO_LAST, 1)]
)
def test_each_person_sees_exactly_what_access_allows(
    store: Engine, now: datetime, last: datetime, with_news: int
) -> None:
    config = load()
    seed_users(store, PEOPLE, last)
    with Session(store) as session:
        nonempty = 0
        for address in PEOPLE:
            due, content = digest_of(session, config, address, now)
            assert due.since == last
            want = expected(session, config, address, last, now)
            got = {item.thread_id: item.new_count for item in content.items}
            assert got == want, address
            nonempty += bool(got)
            viewer = viewer_for(address, config.spaces, config.staff_domains)
            for item in content.yours:  # "yours": a message was delivered to them or names them
                assert _personal(session, viewer, item.thread_id), address
            assert not (
                {i.thread_id for i in content.spaces} & {i.thread_id for i in content.yours}
            )
            assert viewer.address == address
        assert nonempty >= with_news, "the scenario must give some people news"


def _personal(session: Session, viewer: Viewer, tid: int) -> bool:
    pks = list(visible_message_ids(session, viewer, tid))
    reasons = grant_reasons(session, viewer, pks).values()
    return any("delivered" in found or "named" in found for found in reasons)


def test_a_known_message_id_in_references_brings_no_digest(engine: Engine) -> None:
    """A stranger replied into "Heads up" naming its Message-ID, Cc'd to himself.

    He received nothing there from anyone, started nothing, and reads no
    space: the thread's other messages are not his, in the viewer or by mail.
    """
    config = load(CONFIG.replace('visibility = "staff"', 'members = ["x@example.org"]'))
    run_import(engine, [str(ENRON), str(INTRUDER)], workers=1, rules=config.ruleset)
    stranger = "intruder@example.com"
    seed_users(engine, [stranger, "someone.new@enron.com"], LAST_DIGEST)
    with Session(engine) as session:
        _, content = digest_of(session, config, stranger, HEADS_RUN)
        assert content.items == ()
        assert expected(session, config, stranger, LAST_DIGEST, HEADS_RUN) == {}
        # A party to the thread still gets it, the stranger's reply included.
        _, party = digest_of(session, config, "kam.keiser@enron.com", HEADS_RUN)
        (item,) = [i for i in party.items if i.subject == "Heads up"]
        want = expected(session, config, "kam.keiser@enron.com", LAST_DIGEST, HEADS_RUN)
        assert item.new_count == want[item.thread_id]


def test_the_snippet_is_the_newest_new_text_never_quoted_history(store: Engine) -> None:
    config = load()
    with Session(store) as session:
        _, content = digest_of(session, config, "someone.new@enron.com", HEADS_RUN)
        (item,) = content.items
        assert item.subject == "Heads up" and item.space_name == "Trading"
        assert item.new_count == 5 and len(item.authors) >= 2
        views = {v.pk: v for v in thread_messages(session, item.thread_id)}
        newest = views[item.newest_pk]
        assert newest.date == max(v.date for v in views.values() if v.date)
        text = snippets(session, {item.newest_pk})[item.newest_pk]
        assert text == newest.new_text
        snippet = first_lines(text)
        assert snippet and snippet in " ".join(newest.new_text.split())
        quoted = [line.strip() for line in newest.quoted_text.splitlines() if len(line) > 20]
        assert quoted and not any(line in snippet for line in quoted)


def test_a_run_queues_one_digest_per_person_and_a_second_run_none(store: Engine) -> None:
    config = load()
    seed_users(store, PEOPLE, LAST_DIGEST)
    first = run(store, config, ENRON_RUN)
    assert first.counts.get("queued", 0) >= 2 and first.counts.get("empty", 0) >= 1
    again = run(store, config, ENRON_RUN + timedelta(minutes=5))
    assert again.due == 0 and again.counts == {}
    with Session(store) as session:
        rows = session.execute(select(DigestSend)).scalars().all()
        assert Counter((r.address, r.period) for r in rows).most_common(1)[0][1] == 1
        queued = [r for r in rows if r.status == "queued"]
        assert {r.period for r in rows} == {"weekly:2001-W49"}
        assert all(r.outbox_id for r in queued)
        assert session.scalar(select(func.count()).select_from(Outbox)) == len(queued)
        assert all(r.outbox_id is None for r in rows if r.status == "empty")
        # Sent digests move the window on; empty ones do not.
        for r in rows:
            user = session.get(User, r.address)
            moved = user is not None and user.last_digest_at == ENRON_RUN
            assert moved == (r.status == "queued"), r.address


def test_after_downtime_the_missed_digest_goes_out_once(store: Engine) -> None:
    config = load(CONFIG.replace('default_frequency = "weekly"', 'default_frequency = "daily"'))
    seed_users(store, ["kam.keiser@enron.com"], datetime(2002, 1, 29, 7, tzinfo=UTC))
    # Down from Tuesday to Saturday: runs every 5 minutes after restart, one digest.
    restart = datetime(2002, 2, 2, 11, 0, tzinfo=UTC)
    for minutes in range(0, 60, 5):
        run(store, config, restart + timedelta(minutes=minutes), only="kam.keiser@enron.com")
    with Session(store) as session:
        rows = session.execute(select(DigestSend)).scalars().all()
        assert [(r.period, r.status) for r in rows] == [("daily:2002-02-02", "queued")]


def test_two_runs_at_once_send_each_digest_once(store: Engine) -> None:
    config = load()
    seed_users(store, PEOPLE, LAST_DIGEST)
    reports: list[Any] = []

    def runner() -> None:
        reports.append(run(store, config, ENRON_RUN, batch=2))

    workers = [threading.Thread(target=runner) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with Session(store) as session:
        rows = session.execute(select(DigestSend)).scalars().all()
        assert len(rows) == len({r.address for r in rows})
        queued = sum(r.status == "queued" for r in rows)
        boxes = session.execute(select(Outbox.recipients)).scalars().all()
        assert len(boxes) == queued == len(set(boxes))
    claimed = sum(sum(v for k, v in r.counts.items() if k != "taken") for r in reports)
    assert claimed == len(rows)


def test_bad_addresses_and_names_are_recorded_not_sent_and_not_injected(store: Engine) -> None:
    config = load()
    with Session(store) as session, session.begin():
        # People rows as a broken mailer might have left them.
        session.add(Person(address="bad address@enron.com", name="Bad"))
        session.add(Person(address="two@@enron.com", name="Two"))
        session.add(User(address="", created_at=HEADS_RUN))  # settings, but no address
        kam = session.execute(
            select(Person).where(Person.address == "kam.keiser@enron.com")
        ).scalar_one()
        kam.name = "Kam\r\nBcc: victim@example.org\x1b\x7f" + "K" * 3000
        session.execute(
            update(Thread).where(Thread.subject == "Heads up").values(subject="Heads up " * 2000)
        )
    report = run(store, config, HEADS_RUN)
    failures = dict(report.failures)
    assert "bad address@enron.com" in failures and "two@@enron.com" in failures
    assert all(reason for reason in failures.values())
    assert failures[""] == "address '': empty address"
    with Session(store) as session:
        rows = {r.address: r for r in session.execute(select(DigestSend)).scalars()}
        assert rows["bad address@enron.com"].status == "failed"
        assert "white space" in rows["bad address@enron.com"].detail
        assert rows["bad address@enron.com"].outbox_id is None
        data = session.execute(
            select(Outbox.data).where(Outbox.id == rows["kam.keiser@enron.com"].outbox_id)
        ).scalar_one()
    message = BytesParser(policy=policy.strict).parsebytes(data)
    assert message.get_all("Bcc") is None
    assert message["To"].addresses[0].addr_spec == "kam.keiser@enron.com"
    assert len(str(message["Subject"])) <= 200
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    again = run(store, config, HEADS_RUN + timedelta(minutes=5))
    assert again.due == 0  # failures are recorded for the period: not retried every 5 minutes


def test_french_readers_get_french(store: Engine) -> None:
    config = load()
    with Session(store) as session, session.begin():
        session.add(User(address="kam.keiser@enron.com", language="fr", created_at=HEADS_RUN))
    run(store, config, HEADS_RUN, only="kam.keiser@enron.com")
    with Session(store) as session:
        data = session.execute(select(Outbox.data)).scalar_one()
    message = BytesParser(policy=policy.strict).parsebytes(data)
    assert str(message["Subject"]).startswith("Résumé : 1 discussion active")
    html = message.get_body(("html",)).get_content()
    assert '<html lang="fr"' in html and "Se désabonner" in html


def test_frequency_links_change_only_what_they_name(store: Engine) -> None:
    config = load()
    with Session(store) as session, session.begin():
        set_frequency(session, "Kam.Keiser@enron.com", "off", HEADS_RUN)
        set_frequency(session, "pallen@enron.com", "daily", HEADS_RUN)
    report = run(store, config, HEADS_RUN)
    with Session(store) as session:
        periods = dict(session.execute(select(DigestSend.address, DigestSend.period)).all())
    assert "kam.keiser@enron.com" not in periods
    assert periods["pallen@enron.com"] == "daily:2002-02-02"
    assert periods["k..allen@enron.com"] == "weekly:2002-W05"
    assert report.due == len(periods)


async def test_a_digest_reaches_a_real_server_unchanged(store: Engine) -> None:
    config = load()
    run(store, config, HEADS_RUN, only="someone.new@enron.com")
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    runner = StoreRunner(store)
    try:
        counts = await Mailer(runner, relay_config(port), "bridge@example.com").send_due(HEADS_RUN)
    finally:
        controller.stop()
        runner._writer.shutdown(wait=True)
        runner._readers.shutdown(wait=True)
    assert counts.sent == 1
    with Session(store) as session:
        stored = session.execute(select(Outbox.data)).scalar_one()
    (received,) = handler.received
    assert received == stored
    message = BytesParser(policy=policy.strict).parsebytes(received)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Precedence"] == "bulk" and message["Auto-Submitted"] == "auto-generated"
    assert message["List-Id"] == "Bridge digest <digest.bridge.example.com>"
    https, mailto = [u.strip(" <>") for u in str(message["List-Unsubscribe"]).split(",")]
    assert https.startswith("https://bridge.example.com/digest/unsubscribe?t=")
    assert mailto.startswith("mailto:bridge@example.com")
    assert str(message["Subject"]) == "Digest: 1 active discussion in Trading"
    text = message.get_body(("plain",)).get_content()
    assert "Heads up" in text and "https://bridge.example.com/t/" in text


async def test_the_daemon_runs_digests_on_a_schedule(tmp_path: Path) -> None:
    from bridge.daemon import Daemon

    data = {
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "smtp": {"listeners": [{"port": 0}]},
        "web": {"port": 0},
        "bridge": {"message_id_domain": "bridge.example.com", "address": "bridge@example.com"},
    }
    daemon = Daemon(parse_config(data, str(tmp_path / "bridge.toml")))
    await daemon.start()
    try:
        assert "digests" in daemon.health_status()["scheduler"]["jobs"]
        await daemon.scheduler.run_digests()
        assert daemon.scheduler.digest_runs == 1
    finally:
        await daemon.stop()


def test_newcomers_wait_for_a_send_hour_people_with_history_do_not(store: Engine) -> None:
    config = load()
    seed_users(store, ["kam.keiser@enron.com"], datetime(2002, 1, 19, 7, tzinfo=UTC))
    # Saturday 15:00: eight hours after the send hour.
    late = run(store, config, datetime(2002, 2, 2, 15, 0, tzinfo=UTC))
    with Session(store) as session:
        addresses = set(session.execute(select(DigestSend.address)).scalars())
    assert addresses == {"kam.keiser@enron.com"}  # the missed digest, once
    assert late.due == 1
