"""The guarded fallback for mail without threading headers (all of Enron).

`reply_link(child, parent)` says whether `child` replies to `parent`, with
a score. A shared subject proves nothing ("Re: Meeting"), so a link also
needs evidence from the child's quoted history: the parent's own words, or
a quoted header block ("From: … Sent: …", Lotus "X on 12/07/2001 05:14 AM",
"On …, X wrote:") naming the parent's sender and sending time. No library
matches quoted text against a candidate parent, hence the code here.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.core.linking.threads import ThreadMember

_MIN_PRINT_CHARS = 30  # below this ("Thanks!", "ok, see you") a quote proves nothing
_MIN_PRINT_WORDS = 5
_PRINT_CHARS = 200
_CLOCK_SLACK = timedelta(minutes=3)
# An attribution renders the parent's own Date header, cut to the minute.
_QUOTE_SLACK = timedelta(minutes=2)
_MAX_ZONE_SHIFT = 14  # hours: quoted times are in the quoting reader's zone
_HOUR = timedelta(hours=1)
_HALF_HOUR = timedelta(minutes=30)  # India, Newfoundland: only to rule a message out
_NEAR_LINES = 2
_ZONE_WEST, _ZONE_EAST = timedelta(hours=12), timedelta(hours=14)  # UTC-12 .. UTC+14

_QUOTE_MARKS = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)
_SPACE = re.compile(r"\s+")

_FROM_LINE = re.compile(
    r"^\s*\*?(?:from|de|von|da|van|från|fra|od|expéditeur)\s*:\*?\s*(.+)$", re.I
)
_SENT_LINE = re.compile(
    r"^\s*\*?(?:sent|date|envoyé|gesendet|datum|inviato|data|verzonden|skickat|sendt|fecha)"
    r"\s*:\*?\s*(.+)$",
    re.I,
)
_ATTRIBUTION = re.compile(
    r"(?:wrote|writes|schrieb|a écrit|escribió|ha scritto|skrev)\s*:\s*$", re.I
)
_NUMERIC_STAMP = re.compile(
    r"(\d{1,2})/(\d{1,2})/(\d{2,4}),?\s+(\d{1,2}):(\d{2})(?::\d{2})?\s*([AaPp]\.?[Mm]\.?)?"
)

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "januar", "janvier"),
            ("feb", "februar", "fév", "fev"),
            ("mar", "mär", "mrz", "mars"),
            ("apr", "avr"),
            ("may", "mai", "mei"),
            ("jun", "juin"),
            ("jul", "juil"),
            ("aug", "aoû", "aou"),
            ("sep", "sept"),
            ("oct", "okt"),
            ("nov",),
            ("dec", "dez", "déc"),
        ),
        start=1,
    )
    for name in names
}
_MONTH_WORD = r"([a-zäéû]{3,9})\.?"
_MONTH_DAY_YEAR = re.compile(_MONTH_WORD + r"\s+(\d{1,2}),?\s+(\d{4})", re.I)
_DAY_MONTH_YEAR = re.compile(r"(\d{1,2})\.?\s+" + _MONTH_WORD + r",?\s+(\d{4})", re.I)
_NUMERIC_DATE = re.compile(
    r"(\d{4})[-./](\d{1,2})[-./](\d{1,2})|(\d{1,2})([./])(\d{1,2})\5(\d{2,4})"
)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::\d{2})?\s*([AaPp]\.?[Mm]\.?)?")

_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_AT_WORD = re.compile(r"([\w.+'-]+) at ([\w-]+(?:\.[\w-]+)+)")
# Words of quoted headers that are not parts of a name (Lotus "X/HOU/ECT@ENRON").
_NOT_NAMES = frozenset(
    {"on", "at", "am", "pm", "from", "sent", "wrote", "writes", "to", "cc", "the", "and"}
    | {"enron", "ect", "hou", "corp", "com"}
)


def normalise_text(text: str) -> str:
    """Casefolded text without `>` markers, whitespace runs made one space."""
    return _SPACE.sub(" ", _QUOTE_MARKS.sub("", text)).strip().casefold()


def fingerprint(text: str) -> str | None:
    """The start of a message's own words, or None when too short to prove a quote."""
    norm = normalise_text(text)
    if len(norm) < _MIN_PRINT_CHARS or len(norm.split()) < _MIN_PRINT_WORDS:
        return None
    if len(norm) <= _PRINT_CHARS:
        return norm
    cut = norm[:_PRINT_CHARS]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def _to_24h(hour: int, ampm: str | None) -> int:
    if not ampm:
        return hour
    pm = ampm[0].lower() == "p"
    return (hour % 12) + (12 if pm else 0)


def parse_stamp(text: str) -> datetime | None:
    """A naive date and time written by a mail client, or None."""
    numeric = _NUMERIC_STAMP.search(text)
    if numeric:
        first, second, year, hour, minute, ampm = (g or "" for g in numeric.groups())
        hm = (_to_24h(int(hour), ampm), int(minute))
        # US order first (Outlook, Lotus); day first when the month cannot be.
        return _build(int(year), int(first), int(second), *hm) or _build(
            int(year), int(second), int(first), *hm
        )
    date: tuple[int, int, int] | None = None
    end = 0
    for pattern in (_MONTH_DAY_YEAR, _DAY_MONTH_YEAR):
        found = pattern.search(text)
        if found:
            groups = found.groups()
            if pattern is _MONTH_DAY_YEAR:
                word, day_text, year_text = groups
            else:
                day_text, word, year_text = groups
            month = _MONTHS.get(word[:3].casefold()) or _MONTHS.get(word[:4].casefold())
            if month:
                date, end = (int(year_text), month, int(day_text)), found.end()
                break
    if date is None:
        found = _NUMERIC_DATE.search(text)
        if not found:
            return None
        iso_y, iso_m, iso_d, first, sep, second, year_text = found.groups()
        if iso_y:
            date = (int(iso_y), int(iso_m), int(iso_d))
        elif sep == ".":  # German and friends: day.month.year
            date = (int(year_text), int(second), int(first))
        else:
            date = (int(year_text), int(first), int(second))
        end = found.end()
    clock = _CLOCK.search(text, end) or _CLOCK.search(text)
    if clock is None:
        return None
    hour, minute, ampm = clock.groups()
    return _build(date[0], date[1], date[2], _to_24h(int(hour), ampm), int(minute))


def _build(year: int, month: int, day: int, hour: int, minute: int) -> datetime | None:
    if year < 100:
        year += 2000 if year < 70 else 1900
    try:
        return datetime(year, month, day, hour, minute)
    except ValueError:
        return None


def _local_time(member: ThreadMember) -> datetime | None:
    if member.sent_local is not None:
        return member.sent_local.replace(tzinfo=None)
    return member.date.replace(tzinfo=None) if member.date is not None else None


def _same_moment(quoted: datetime, sent: datetime) -> bool:
    """Equal within a few minutes, allowing a whole-hour time-zone shift."""
    delta = abs(quoted - sent)
    if delta > timedelta(hours=_MAX_ZONE_SHIFT) + _CLOCK_SLACK:
        return False
    off_hour = delta % _HOUR
    return off_hour <= _CLOCK_SLACK or _HOUR - off_hour <= _CLOCK_SLACK


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-zà-ÿ]+", text.casefold()) if t]


def names_sender(who: str, address: str) -> bool:
    """Whether the quoted `who` ("Allen, Phillip K.", "Peng Yu <x at y>") is `address`."""
    who = _AT_WORD.sub(r"\1@\2", who.casefold())
    if address and address in _ADDRESS.findall(who):
        return True
    who = _ADDRESS.sub(" ", who)
    who = re.split(r"[/@]", who, maxsplit=1)[0]  # Lotus "Phillip K Allen/HOU/ECT@ECT"
    names = [t for t in _tokens(who) if t not in _NOT_NAMES]
    local = _tokens(address.split("@", 1)[0])
    if not names or not local:
        return False
    joined = {a + b for a in names for b in names if a != b and len(a) > 1 and len(b) > 1}
    joined |= {a[0] + b for a in names for b in names if a != b and len(b) > 2}
    if any(part in joined for part in local if len(part) > 3):
        return True
    full = [part for part in local if len(part) > 2 and part in names]
    if not full:
        return False
    rest = [part for part in local if part != full[0]]
    return any(part in names or any(n.startswith(part) for n in names) for part in rest)


@dataclass(frozen=True, slots=True)
class _Block:
    """A quoted header naming an author, and a time when it gives one (its line in the quote)."""

    line: int
    offset: int
    who: str
    when: datetime | None
    intro: int  # quote depth of the words it introduces
    wrote: bool  # an "On …, X wrote:" attribution (not Outlook's From/Sent or Lotus)


def _quote_lines(text: str) -> tuple[list[str], list[int]]:
    """The lines without their `>` marks, and each line's quote depth."""
    lines: list[str] = []
    depths: list[int] = []
    for line in text.splitlines():
        marks = _QUOTE_MARKS.match(line)
        depths.append(marks.group().count(">") if marks else 0)
        lines.append(line[marks.end() :] if marks else line)
    return lines, depths


def _header_blocks(lines: list[str], depths: list[int]) -> list[_Block]:
    """Every quoted header of these (quote-mark free) lines that names an author and a time."""
    offsets, position = [], 0
    for line in lines:
        offsets.append(position)
        position += len(line) + 1
    found: list[_Block] = []
    for number, line in enumerate(lines):
        author = _FROM_LINE.match(line)
        if author:
            for near in lines[max(0, number - 4) : number + 6]:
                sent = _SENT_LINE.match(near)
                stamp = parse_stamp(sent.group(1)) if sent else None
                if stamp is not None:
                    who = author.group(1)
                    found.append(_Block(number, offsets[number], who, stamp, depths[number], False))
                    break
            continue
        if _ATTRIBUTION.search(line):
            # "On Mon, 5 Mar 2007 07:39:00 +0100,\nJose wrote:"; never another attribution
            above = lines[number - 1] if number else ""
            joined = line if _ATTRIBUTION.search(above) else f"{above} {line}"
            stamp = parse_stamp(line) or parse_stamp(joined)
            found.append(_Block(number, offsets[number], joined, stamp, depths[number] + 1, True))
            continue
        numeric = _NUMERIC_STAMP.search(line)
        if numeric:  # Lotus Notes: "Name/ORG@ORG on 12/07/2001 05:14 AM" or name above
            who = line[: numeric.start()].strip()
            if not _tokens(who) and number:
                who = lines[number - 1]
            stamp = parse_stamp(line)
            if stamp is not None:
                found.append(_Block(number, offsets[number], who, stamp, depths[number], False))
    return found


def _readings(stamp: datetime) -> tuple[datetime, ...]:
    """The stamp, and with day and month swapped when that is a date too (04/01/2012)."""
    if stamp.day > 12 or stamp.day == stamp.month:
        return (stamp,)
    try:
        return stamp, stamp.replace(month=stamp.day, day=stamp.month)
    except ValueError:
        return (stamp,)


def _normalised_lines(lines: list[str]) -> tuple[str, list[int]]:
    """`normalise_text` of the lines, and where each line starts in it."""
    parts: list[str] = []
    starts: list[int] = []
    position = 0
    for line in lines:
        starts.append(position)
        part = _SPACE.sub(" ", line).strip().casefold()
        if part:
            parts.append(part)
            position += len(part) + 1
    return " ".join(parts), starts


def _could_be_sent(quoted: datetime, parent: ThreadMember) -> bool:
    """Whether a quoted time may be the parent's, in any zone the quoting reader may be in."""
    if parent.date is None:
        return True
    utc = parent.date
    if utc.tzinfo is not None:
        utc = utc.astimezone(UTC).replace(tzinfo=None)
    for reading in _readings(quoted):
        shift = reading - utc
        if -_ZONE_WEST - _QUOTE_SLACK <= shift <= _ZONE_EAST + _QUOTE_SLACK:
            off = shift % _HALF_HOUR
            if off <= _QUOTE_SLACK or _HALF_HOUR - off <= _QUOTE_SLACK:
                return True
    return False


def _quoted_from_elsewhere(
    blocks: list[_Block], lines: list[str], depths: list[int], line: int, parent: ThreadMember
) -> bool:
    """Whether the attribution over the quoted words at `line` dates them to another moment.

    A resent post, a digest, or one question posted twice put the parent's
    very words under another message's "On …, X wrote:": then the words
    prove a reply to that message, not to this parent. The attribution over
    a line is the nearest one above that introduces its quote depth, with no
    shallower line between (interleaved replies quote several authors).
    Outlook and Lotus headers do not mark depth, so they never rule out.
    """
    depth = depths[line]
    for block in reversed(blocks):
        if block.line > line or not block.wrote:
            continue
        between = [n for n in range(block.line + 1, line) if lines[n].strip()]
        if any(depths[n] < depth for n in between):
            return False
        if block.intro == depth:
            # Only words right under the attribution are surely its own: a
            # quoted message may itself quote the parent without marks.
            if len(between) > _NEAR_LINES:
                return False
            return block.when is not None and not _could_be_sent(block.when, parent)
    return False


def _participants_overlap(child: ThreadMember, parent: ThreadMember) -> bool:
    """True when recipients are unknown (list archives keep only From)."""
    if not (child.participants - {child.sender}) or not (parent.participants - {parent.sender}):
        return True
    return child.sender in parent.participants or parent.sender in child.participants


def reply_link(
    child: ThreadMember, parent: ThreadMember, *, window: timedelta = timedelta(days=60)
) -> float | None:
    """None unless `child` replies to `parent`; else a score, higher = better."""
    subject = " ".join(child.subject_norm.split())
    if not subject or subject != " ".join(parent.subject_norm.split()):
        return None
    if child.date is None or parent.date is None:
        return None
    if not parent.date < child.date <= parent.date + window:
        return None
    if not _participants_overlap(child, parent):
        return None
    haystack = child.quoted_text  # new text holding the parent's words is a resend
    if not haystack.strip():
        return None
    lines, depths = _quote_lines(haystack)
    blocks = _header_blocks(lines, depths)
    sent = _local_time(parent)
    positions: list[float] = []
    printed = fingerprint(parent.new_text)
    if printed:
        norm, starts = _normalised_lines(lines)
        at = norm.find(printed)
        line = bisect_right(starts, at) - 1
        if at >= 0 and not _quoted_from_elsewhere(blocks, lines, depths, line, parent):
            positions.append(at / max(len(norm), 1))
    if sent is not None:
        for block in blocks:
            if block.when is None:
                continue
            if any(_same_moment(r, sent) for r in _readings(block.when)) and names_sender(
                block.who, parent.sender
            ):
                positions.append(block.offset / max(len(haystack), 1))
                break
    if not positions:
        return None
    # The direct parent is quoted first; older ancestors further down.
    both = 0.5 if len(positions) == 2 else 0.0
    return round(1.0 + both + 0.5 * (1.0 - min(positions)), 6)
