"""Digest runs against the calendar: DST changes, a scheduler that fires twice, a clock
that jumps back. On SQLite and PostgreSQL, with the real run (`digest_run.run`).

Readers in Paris and New York get daily digests at 02:00 their time: the hour
that does not exist when clocks go forward, and (in Paris) the hour that
happens twice when they go back. Mail arrives every hour, on the hour, so
a message is dated at each send time. Whatever the
clock does, each person gets at most one digest per day of their own
calendar, and each message is news in exactly one digest.
"""

from __future__ import annotations

import mailbox
import tomllib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import Config, parse_config
from bridge.ingest.files import run_import
from bridge.outbound.digest_run import run
from bridge.store.tables import DigestSend, Outbox, User

PARIS = "reader.paris@corp.example"
NEW_YORK = "reader.ny@corp.example"
ZONES = {PARIS: ZoneInfo("Europe/Paris"), NEW_YORK: ZoneInfo("America/New_York")}
CONFIG = """
[bridge]
message_id_domain = "bridge.example.com"
address = "bridge@corp.example"
staff_domains = ["corp.example"]
[web]
base_url = "https://bridge.example.com"
[digest]
default_frequency = "daily"
send_hour = 2
"""
STEP = timedelta(minutes=15)
# Each span covers the local days around one change of clocks in 2026.
SPANS = {
    "paris-spring": (PARIS, date(2026, 3, 28)),  # 02:00 -> 03:00 on the 29th
    "paris-autumn": (PARIS, date(2026, 10, 24)),  # 02:00-03:00 twice on the 25th
    "new-york-spring": (NEW_YORK, date(2026, 3, 7)),  # 02:00 -> 03:00 on the 8th
    "new-york-autumn": (NEW_YORK, date(2026, 10, 31)),  # 01:00-02:00 twice on Nov 1
}
DAYS = 3


def load() -> Config:
    return parse_config(tomllib.loads(CONFIG), "bridge.toml")


def mail_every_hour(path: Path, start: datetime, end: datetime) -> list[str]:
    """An mbox with one new thread every hour to both readers; their subjects."""
    box = mailbox.mbox(path)
    subjects = []
    when = start
    while when < end:
        message = EmailMessage()
        message["From"] = "Alice Martin <alice@corp.example>"
        message["To"] = f"{PARIS}, {NEW_YORK}"
        subject = f"Update {when:%Y-%m-%d %H:%M}"
        message["Subject"] = subject
        message["Date"] = format_datetime(when)
        message["Message-ID"] = f"<{when:%Y%m%d%H%M}.update@corp.example>"
        message.set_content(f"Status at {when.isoformat()}: all systems nominal.\n")
        box.add(message)
        subjects.append(subject)
        when += timedelta(hours=1)
    box.close()
    return subjects


def local_midnight(address: str, day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZONES[address]).astimezone(UTC)


@pytest.fixture(params=sorted(SPANS))
def span(request: pytest.FixtureRequest) -> Iterator[tuple[str, datetime, datetime]]:
    address, first = SPANS[request.param]
    yield address, local_midnight(address, first), local_midnight(address, first + timedelta(DAYS))


def send_time(address: str, day: date) -> datetime:
    """02:00 on `day` in the reader's zone, as zoneinfo resolves it (first of a repeated hour)."""
    return datetime(day.year, day.month, day.day, 2, tzinfo=ZONES[address]).astimezone(UTC)


def seed(engine: Engine, tmp_path: Path, address: str, start: datetime, end: datetime) -> int:
    """The reader, with the digest of the day before `start` sent, and the mail; its count."""
    subjects = mail_every_hour(tmp_path / "updates.mbox", start + timedelta(hours=1), end)
    result = run_import(engine, [str(tmp_path / "updates.mbox")], workers=1)
    assert result.tally.outcomes["stored"] == len(subjects)
    eve = start.astimezone(ZONES[address]).date() - timedelta(days=1)
    with Session(engine) as session, session.begin():
        session.add(
            User(
                address=address,
                timezone=ZONES[address].key,
                created_at=start - timedelta(days=30),
                last_digest_at=send_time(address, eve),
            )
        )
        session.add(
            DigestSend(
                address=address,
                period=f"daily:{eve.isoformat()}",
                status="queued",
                created_at=send_time(address, eve),
            )
        )
    return len(subjects)


def sends(engine: Engine, address: str) -> list[DigestSend]:
    with Session(engine) as session:
        return list(
            session.execute(
                select(DigestSend).where(DigestSend.address == address).order_by(DigestSend.id)
            ).scalars()
        )


def test_a_scheduler_firing_twice_across_a_dst_change_sends_one_digest_a_day(
    engine: Engine, tmp_path: Path, span: tuple[str, datetime, datetime]
) -> None:
    address, start, end = span
    config = load()
    news = seed(engine, tmp_path, address, start, end)
    now = start
    while now <= end:
        for _ in range(2):  # a second run at the same instant: a doubled timer, a second daemon
            run(engine, config, now, only=address)
        now += STEP
    rows = sends(engine, address)[1:]
    days = [start.astimezone(ZONES[address]).date() + timedelta(d) for d in range(DAYS)]
    assert [r.period for r in rows] == [f"daily:{d.isoformat()}" for d in days]
    assert {r.status for r in rows} == {"queued"}
    with Session(engine) as session:
        assert len(session.execute(select(Outbox.id)).all()) == len(rows)
    # Each digest has the news since the one before: every message up to the
    # last send time is in exactly one digest, whatever the length of the day.
    for row, day in zip(rows, days, strict=True):
        since = send_time(address, day - timedelta(days=1))
        assert row.threads == messages_between(start, since, send_time(address, day)), row.period
    assert sum(r.threads for r in rows) == news - messages_between(
        start, send_time(address, days[-1]), end - timedelta(seconds=1)
    )


def messages_between(start: datetime, low: datetime, high: datetime) -> int:
    """How many of the hourly messages (from start + 1 h, before end) are dated in (low, high]."""
    first = start + timedelta(hours=1)
    return sum(1 for k in range(200) if low < first + timedelta(hours=k) <= high)


def test_a_clock_that_jumps_back_sends_nothing_twice(engine: Engine, tmp_path: Path) -> None:
    address = PARIS
    start = local_midnight(address, date(2026, 10, 24))
    end = local_midnight(address, date(2026, 10, 27))
    config = load()
    seed(engine, tmp_path, address, start, end)
    day_two = start + timedelta(days=1, hours=12)
    now = start
    while now <= day_two:
        run(engine, config, now, only=address)
        now += STEP
    before = [(r.period, r.status, r.threads) for r in sends(engine, address)[1:]]
    assert [p for p, _, _ in before] == ["daily:2026-10-24", "daily:2026-10-25"]
    # The clock is set back a day and a half (a bad NTP source, a restored VM),
    # then runs forward again to the end.
    now = start
    while now <= end:
        run(engine, config, now, only=address)
        now += STEP
    rows = sends(engine, address)[1:]
    assert [(r.period, r.status, r.threads) for r in rows[:2]] == before
    counted = Counter(r.period for r in rows)
    assert max(counted.values()) == 1
    assert [r.period for r in rows if r.status == "queued"] == [
        "daily:2026-10-24",
        "daily:2026-10-25",
        "daily:2026-10-26",
    ]
    # The digest after the jump starts where the last one sent stopped, never earlier.
    third = next(r for r in rows if r.period == "daily:2026-10-26")
    assert third.threads == messages_between(
        start, send_time(address, date(2026, 10, 25)), send_time(address, date(2026, 10, 26))
    )
    with Session(engine) as session:
        user = session.get(User, address)
        assert user is not None and user.last_digest_at is not None
        assert user.last_digest_at.astimezone(ZONES[address]).date() == date(2026, 10, 26)
