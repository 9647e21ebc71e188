"""Digests: when a person is due one, and what it says. No I/O: `now` comes in.

A period is named in the person's own calendar: "daily:2026-11-27" or
"weekly:2026-W48" (ISO week). The period that counts is the latest one whose
send time (the configured hour on that day, in the person's zone) has
passed; a person is due when they have no digest for it yet. After a week
of downtime that is still one period: the missed digest goes out once.

The content is built from activity rows the store gathers in one pass for
everybody (see `bridge.outbound.digests`): each person's access is checked
here, message by message, with `bridge.core.access`. A thread's subject is
shown only when its first message is one the person may see; otherwise the
digest names it by the oldest message they may see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bridge.core.access import DELIVERED, NAMED, MessageFacts, Viewer, grants, may_see
from bridge.core.admin_rules.rules import Space

FREQUENCIES = ("off", "daily", "weekly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PERIOD_LENGTH = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
# However long ago the last digest was, one digest covers at most this much.
MAX_WINDOW = timedelta(days=28)


@dataclass(frozen=True, slots=True)
class Period:
    """One digest period: its name and when its digest is due (UTC-aware)."""

    name: str
    send_at: datetime


def frequency_for(own: str, readable: Sequence[Space], default: str) -> str:
    """The person's own choice, else the first space they read that sets one, else `default`."""
    if own in FREQUENCIES:
        return own
    for space in readable:
        if space.digest in FREQUENCIES:
            return space.digest
    return default if default in FREQUENCIES else "off"


def current_period(
    frequency: str, now: datetime, tz: ZoneInfo, send_hour: int, weekly_day: str
) -> Period | None:
    """The latest period whose send time has passed at `now`; None when digests are off."""
    if frequency not in PERIOD_LENGTH:
        return None
    local = now.astimezone(tz)
    day = local.date()
    if frequency == "weekly":
        day -= timedelta(days=(day.weekday() - WEEKDAYS.index(weekly_day)) % 7)
    send_at = _at(day, send_hour, tz)
    if send_at > now:
        day -= PERIOD_LENGTH[frequency]
        send_at = _at(day, send_hour, tz)
    return Period(period_name(frequency, day), send_at)


def _at(day: date, hour: int, tz: ZoneInfo) -> datetime:
    # zoneinfo resolves a time skipped by a DST change forward and a repeated one to its first.
    return datetime.combine(day, time(hour), tzinfo=tz)


def period_name(frequency: str, day: date) -> str:
    if frequency == "weekly":
        year, week, _ = day.isocalendar()
        return f"weekly:{year}-W{week:02d}"
    return f"daily:{day.isoformat()}"


def window_start(frequency: str, period: Period, last_digest_at: datetime | None) -> datetime:
    """Where a digest's news start: the last digest, else one period back, at most MAX_WINDOW."""
    start = last_digest_at or period.send_at - PERIOD_LENGTH.get(frequency, timedelta(days=1))
    return max(start, period.send_at - MAX_WINDOW)


# -- content --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message dated inside the window, with what access needs to know of it."""

    pk: int
    thread_id: int
    date: datetime
    sender: str  # lower-case address, "" when unknown
    sender_name: str
    subject: str
    facts: MessageFacts


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread with news: its subject and date count only for who may see its root."""

    id: int
    subject: str
    first_date: datetime | None
    root: MessageFacts | None  # None when the root is not stored (a ghost)


def is_personal(viewer: Viewer, facts: MessageFacts) -> bool:
    """The message was delivered to the viewer or names them (not only shown by a space)."""
    found = grants(viewer, facts)
    return DELIVERED in found or NAMED in found


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One thread in a digest."""

    thread_id: int
    subject: str
    space: str | None
    space_name: str
    authors: tuple[str, ...]  # names (or addresses), newest first, distinct
    new_count: int
    newest_pk: int  # the message whose new text the digest quotes
    newest_date: datetime
    is_new: bool  # the thread started inside the window


@dataclass(frozen=True, slots=True)
class DigestContent:
    """What one person's digest lists: their own threads first, then their spaces'."""

    address: str
    yours: tuple[DigestItem, ...] = ()
    spaces: tuple[DigestItem, ...] = ()
    space_names: tuple[str, ...] = field(default=())

    @property
    def items(self) -> tuple[DigestItem, ...]:
        return self.yours + self.spaces

    @property
    def empty(self) -> bool:
        return not self.yours and not self.spaces

    @property
    def space_counts(self) -> tuple[tuple[str, int], ...]:
        """(space name, threads) of the spaces section, the fullest first ("" for no space).

        The person's own threads are not in it: a subject line says "7 of
        yours, 1 in Sales", never "8 in Sales".
        """
        counts: dict[str, int] = {}
        for item in self.spaces:
            counts[item.space_name] = counts.get(item.space_name, 0) + 1
        return tuple(sorted(counts.items(), key=lambda pair: -pair[1]))


def build_digest(
    viewer: Viewer,
    since: datetime,
    threads: Mapping[int, ThreadInfo],
    messages: Mapping[int, Sequence[NewMessage]],
    party: Set[int],
    spaced: Iterable[int],
    space_names: Mapping[str, str],
    max_threads: int,
    followed: Set[int] = frozenset(),
    muted: Set[int] = frozenset(),
) -> DigestContent:
    """The digest of `viewer` for news after `since`.

    `party` are the threads holding a message delivered to the viewer or
    naming them, `spaced` threads with news in spaces they read, most
    messages first (`messages[tid]` are a thread's messages in the window,
    newest first). Only messages the viewer may see and did not write count.
    Threads the viewer follows come first of all, in their own section;
    threads they muted are left out.
    """
    # Sorted: the same digest whatever order the sets iterate in.
    yours = _items(
        viewer, since, threads, messages, sorted((party | followed) - muted), space_names
    )
    yours.sort(key=lambda item: (item.thread_id not in followed, *_rank(item)))
    taken = {item.thread_id for item in yours} | set(muted)
    others: list[DigestItem] = []
    for tid in spaced:
        if tid in taken:
            continue
        if len(others) >= max_threads:
            others.sort(key=_rank)
            del others[max_threads:]
            # No later thread can beat the last one kept: it has fewer messages in all.
            if len(messages.get(tid, ())) < others[-1].new_count:
                break
        others.extend(_items(viewer, since, threads, messages, (tid,), space_names))
    others.sort(key=_rank)
    shown = yours[:max_threads] + others[:max_threads]
    names = tuple(dict.fromkeys(i.space_name for i in _by_count(shown) if i.space_name))
    return DigestContent(
        viewer.address, tuple(yours[:max_threads]), tuple(others[:max_threads]), names
    )


def _items(
    viewer: Viewer,
    since: datetime,
    threads: Mapping[int, ThreadInfo],
    messages: Mapping[int, Sequence[NewMessage]],
    candidates: Iterable[int],
    space_names: Mapping[str, str],
) -> list[DigestItem]:
    found = []
    for tid in candidates:
        thread = threads.get(tid)
        if thread is None:
            continue
        item = _item(viewer, since, thread, messages.get(tid, ()), space_names)
        if item is not None:
            found.append(item)
    return found


def _rank(item: DigestItem) -> tuple[int, float, int]:
    return (-item.new_count, -item.newest_date.timestamp(), item.thread_id)


def _by_count(items: Sequence[DigestItem]) -> list[DigestItem]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.space_name] = counts.get(item.space_name, 0) + 1
    return sorted(items, key=lambda i: -counts[i.space_name])


def _item(
    viewer: Viewer,
    since: datetime,
    thread: ThreadInfo,
    messages: Sequence[NewMessage],
    space_names: Mapping[str, str],
) -> DigestItem | None:
    # After `since`, not at it: the digest sent at `since` already had a message dated then.
    visible = [m for m in messages if m.date > since and may_see(viewer, m.facts)]
    seen = [m for m in visible if m.sender != viewer.address]
    if not seen:
        return None
    root_seen = thread.root is not None and may_see(viewer, thread.root)
    authors = tuple(dict.fromkeys(m.sender_name or m.sender or "?" for m in seen))
    # The space shown is that of a message the viewer reads through it.
    space = next(
        (m.facts.space for m in seen if m.facts.space and m.facts.space in viewer.spaces),
        next((m.facts.space for m in seen if m.facts.space), None),
    )
    space_name = space_names.get(space, space) if space else ""
    return DigestItem(
        thread_id=thread.id,
        subject=thread.subject if root_seen else visible[-1].subject,
        space=space,
        space_name=space_name or "",
        authors=authors,
        new_count=len(seen),
        newest_pk=seen[0].pk,
        newest_date=seen[0].date,
        is_new=root_seen and thread.first_date is not None and thread.first_date > since,
    )


def first_lines(text: str, lines: int = 3, limit: int = 280) -> str:
    """The opening of what someone wrote: its first lines, cut at `limit`.

    Blank lines and quoted lines ("> ...", left in the new text by inline
    replies) are skipped: a digest shows what is new, never quoted history.
    """
    kept = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(">")
    ][:lines]
    snippet = " ".join(kept)
    return snippet if len(snippet) <= limit else snippet[: limit - 1].rstrip() + "…"
