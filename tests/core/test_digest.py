"""Digest periods and due times in people's own zones, frequencies, and new-text snippets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bridge.core.admin_rules.rule_config import parse_spaces
from bridge.core.admin_rules.rules import Space
from bridge.core.outgoing.digest import (
    MAX_WINDOW,
    current_period,
    first_lines,
    frequency_for,
    period_name,
    window_start,
)

PARIS = ZoneInfo("Europe/Paris")
AUCKLAND = ZoneInfo("Pacific/Auckland")
UTC_ZONE = ZoneInfo("UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_daily_period_is_today_once_the_local_hour_has_passed() -> None:
    before = current_period("daily", at("2026-11-27T05:59"), PARIS, 7, "monday")
    after = current_period("daily", at("2026-11-27T06:00"), PARIS, 7, "monday")
    assert before is not None and after is not None
    # 07:00 in Paris in November is 06:00 UTC.
    assert before.name == "daily:2026-11-26"
    assert after.name == "daily:2026-11-27"
    assert after.send_at == at("2026-11-27T06:00")


def test_the_same_moment_is_a_different_day_in_auckland() -> None:
    # 2026-11-27 19:00 UTC is 2026-11-28 08:00 in Auckland (UTC+13 in summer).
    period = current_period("daily", at("2026-11-27T19:00"), AUCKLAND, 7, "monday")
    assert period is not None
    assert period.name == "daily:2026-11-28"
    assert period.send_at == at("2026-11-27T18:00")


def test_weekly_period_is_named_by_iso_week_of_the_send_day() -> None:
    # Monday 2026-11-23 is in ISO week 48; until the next Monday 07:00 that is the period.
    for moment in ("2026-11-23T07:00", "2026-11-27T12:00", "2026-11-30T06:59"):
        period = current_period("weekly", at(moment), UTC_ZONE, 7, "monday")
        assert period is not None
        assert period.name == "weekly:2026-W48", moment
    period = current_period("weekly", at("2026-11-30T07:00"), UTC_ZONE, 7, "monday")
    assert period is not None and period.name == "weekly:2026-W49"


def test_iso_week_at_the_turn_of_the_year() -> None:
    # 2026-12-28 is a Monday of ISO week 53 of 2026; 2027-01-04 starts 2027-W01.
    assert period_name("weekly", datetime(2026, 12, 28).date()) == "weekly:2026-W53"
    assert period_name("weekly", datetime(2027, 1, 4).date()) == "weekly:2027-W01"
    # Friday digests: Friday 2027-01-01 belongs to ISO week 53 of 2026.
    period = current_period("weekly", at("2027-01-02T10:00"), UTC_ZONE, 7, "friday")
    assert period is not None and period.name == "weekly:2026-W53"


def test_downtime_gives_one_period_not_one_per_missed_day() -> None:
    # Down from Monday to Thursday: every run after restart names Thursday only.
    periods = {
        current_period(
            "daily", at("2026-11-26T07:00") + timedelta(minutes=5 * i), UTC_ZONE, 7, "monday"
        )
        for i in range(12)
    }
    assert {p.name for p in periods if p} == {"daily:2026-11-26"}


def test_off_has_no_period() -> None:
    assert current_period("off", at("2026-11-27T12:00"), UTC_ZONE, 7, "monday") is None


def test_send_hour_in_a_skipped_dst_hour_still_gives_one_period() -> None:
    # Paris skips 02:00-03:00 on 2026-03-29: a 02:00 send hour still yields that day once.
    names = {
        p.name
        for hour in range(0, 24)
        if (p := current_period("daily", at(f"2026-03-29T{hour:02d}:30"), PARIS, 2, "monday"))
    }
    assert names == {"daily:2026-03-28", "daily:2026-03-29"}


def test_window_starts_at_the_last_digest_but_never_too_far_back() -> None:
    period = current_period("daily", at("2026-11-27T08:00"), UTC_ZONE, 7, "monday")
    assert period is not None
    assert window_start("daily", period, None) == at("2026-11-26T07:00")
    last = at("2026-11-25T07:01")
    assert window_start("daily", period, last) == last
    long_ago = at("2025-01-01T00:00")
    assert window_start("daily", period, long_ago) == period.send_at - MAX_WINDOW


SPACES = parse_spaces(
    [
        {"slug": "eng", "members": ["@eng.example.com"], "digest": "daily"},
        {"slug": "all", "visibility": "staff"},
        {"slug": "sales", "members": ["@sales.example.com"], "digest": "off"},
    ],
    "bridge.toml",
)


@pytest.mark.parametrize(
    ("own", "readable", "default", "expected"),
    [
        ("weekly", ["eng"], "off", "weekly"),  # the person's own choice wins
        ("", ["all", "eng"], "weekly", "daily"),  # the first space that sets one
        ("", ["all"], "weekly", "weekly"),  # no space sets one: the default
        ("", ["sales"], "weekly", "off"),  # a space may turn them off
        ("bogus", [], "daily", "daily"),
    ],
)
def test_frequency_for(own: str, readable: list[str], default: str, expected: str) -> None:
    spaces: list[Space] = [s for s in SPACES if s.slug in readable]
    spaces.sort(key=lambda s: [x.slug for x in SPACES].index(s.slug))
    assert frequency_for(own, spaces, default) == expected


def test_first_lines_skip_quoted_lines() -> None:
    text = "> If these are easy changes,\n>> someone will do them.\nThey are not easy.\n"
    assert first_lines(text) == "They are not easy."


def test_first_lines_skip_blank_lines_and_cut_long_text() -> None:
    text = "\n\nHi all,\n\n  the deal closed today.\nMore below.\nNot shown.\n"
    assert first_lines(text) == "Hi all, the deal closed today. More below."
    long = first_lines("word " * 200, limit=50)
    assert len(long) == 50 and long.endswith("…")
