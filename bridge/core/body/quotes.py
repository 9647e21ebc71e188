"""Split a reply body into what the author wrote, what they quoted, and their signature.

Hand-written rather than a library: talon needs scikit-learn models, and the
small reply parsers (email-reply-parser, mail-parser-reply) keep only the top
text, so interleaved replies lose the author's inline answers, and none reads
Lotus Notes or localised Outlook header blocks. Here each line gets a kind in
one forward pass, with a bounded look-around (a few lines), so the work is
linear in the size of the body.
"""

from __future__ import annotations

from enum import Enum

from bridge.core.body import quote_patterns as pat
from bridge.core.message import SplitText

# Lines longer than this are prose or data, never an attribution or a header.
_MAX_MARKER_LINE = 400
# How far below a header line the rest of its block may be.
_HEADER_WINDOW = 10
# A bare "--" starts a signature only when this few lines follow it.
_SHORT_SIGNATURE = 12


class Kind(Enum):
    NEW = "new"
    QUOTED = "quoted"
    SIGNATURE = "signature"


def split_reply(text: str) -> SplitText:
    """Split one plain-text body into new text, quoted history and signature."""
    lines = text.split("\n")
    kinds = _classify(lines)
    return SplitText(
        new_text=_join(lines, kinds, Kind.NEW),
        quoted_text=_join(lines, kinds, Kind.QUOTED),
        signature=_join(lines, kinds, Kind.SIGNATURE),
    )


def _classify(lines: list[str]) -> list[Kind]:
    kinds = [Kind.NEW] * len(lines)
    header_cache: dict[int, str | None] = {}
    cut = len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if pat.QUOTED.match(line):
            kinds[i] = Kind.QUOTED
            i += 1
            continue
        start = _history_start(lines, i, header_cache)
        if start is not None:
            cut = start
            break
        attribution = _attribution_start(lines, i)
        if attribution is not None:
            follower = _next_nonblank(lines, i + 1)
            if follower is not None and pat.QUOTED.match(lines[follower]):
                # Interleaved or bottom quoting: the attribution belongs to the
                # quote, and the author's lines after the quote stay new text.
                for j in range(attribution, i + 1):
                    kinds[j] = Kind.QUOTED
            else:
                cut = attribution
                break
        i += 1
    for j in range(cut, len(lines)):
        kinds[j] = Kind.QUOTED
    _mark_signature(lines, kinds, cut)
    _attach_blank_lines(lines, kinds)
    return kinds


def _history_start(lines: list[str], i: int, cache: dict[int, str | None]) -> int | None:
    """Where quoted history begins if line `i` opens it (separator or header block)."""
    line = lines[i]
    if len(line) > _MAX_MARKER_LINE:
        return None
    if pat.FORWARD_LINE.match(line):
        return i
    title = _dashed_title(line)
    if title and pat.TITLE_WORDS.search(title):
        return i
    if title or pat.UNDERSCORE_RULE.match(line) or pat.DASH_RULE.match(line):
        follower = _next_nonblank(lines, i + 1, limit=3)
        if follower is not None and _header_block(lines, follower, cache):
            return i
        return None
    if _header_block(lines, i, cache):
        return _rule_above(lines, _lotus_sender_start(lines, i))
    return None


def _rule_above(lines: list[str], i: int) -> int:
    """Include a plain rule ("====", "-----") drawn just above a header block."""
    above = i - 1
    while above >= 0 and i - above <= 3 and not lines[above].strip():
        above -= 1
    if above >= 0 and i - above <= 3 and pat.ANY_RULE.match(lines[above]):
        return above
    return i


def _dashed_title(line: str) -> str | None:
    """The title of "-----Original Message-----"-like lines (closing dashes optional)."""
    stripped = line.strip()
    if len(stripped) < 5 or stripped[0] not in pat.RULE_CHARS or stripped[1] not in pat.RULE_CHARS:
        return None
    closed = stripped[-1] in pat.RULE_CHARS and stripped[-2] in pat.RULE_CHARS
    # Wrapped Lotus lines lose their closing dashes: demand a longer opening run.
    if not closed and not stripped.startswith("-----"):
        return None
    return stripped.strip(pat.RULE_CHARS + " \t") or None


def _header_block(lines: list[str], i: int, cache: dict[int, str | None]) -> bool:
    """Whether an Outlook-style header block (From:/Sent:/To:/Subject:) starts at `i`.

    `cache` keeps each line's header category, so a body of 100,000 "From:"
    lines costs one match per line, not one per line and window.
    """
    first = _header_category(lines, i, cache)
    if first is None:
        return False
    categories = {first}
    for j in range(i + 1, min(len(lines), i + _HEADER_WINDOW)):
        if len(lines[j]) > _MAX_MARKER_LINE:
            break
        found = _header_category(lines, j, cache)
        if found:
            categories.add(found)
    if "from" in categories:
        return len(categories) >= 3 or (len(categories) == 2 and "subject" in categories)
    # Lotus Notes blocks start at To: under the sender's name and date.
    return {"to", "subject"} <= categories and len(categories) >= 3


def _header_category(lines: list[str], j: int, cache: dict[int, str | None]) -> str | None:
    if j not in cache:
        found = pat.HEADER_LINE.match(lines[j]) if len(lines[j]) <= _MAX_MARKER_LINE else None
        cache[j] = pat.KEY_CATEGORY[_key(found.group("key"))] if found else None
    return cache[j]


def _key(raw: str) -> str:
    return " ".join(raw.lower().split())


def _lotus_sender_start(lines: list[str], i: int) -> int:
    """Back up from a To:/Subject: block over the Lotus Notes sender/date lines."""
    first = pat.HEADER_LINE.match(lines[i])
    if first is not None and pat.KEY_CATEGORY[_key(first.group("key"))] == "from":
        return i
    start = i
    j = i - 1
    taken = 0
    while j >= 0 and taken < 3 and start - j <= 4:
        line = lines[j]
        if not line.strip():
            j -= 1
            continue
        if len(line) > 160 or pat.QUOTED.match(line) or not pat.LOTUS_SENDER.search(line):
            break
        start = j
        taken += 1
        j -= 1
    # Lotus Notes puts the sender's bare name on the line right above the date.
    if start < i and start > 0 and _looks_like_name(lines[start - 1]):
        return start - 1
    return start


def _looks_like_name(line: str) -> bool:
    words = line.split()
    return (
        1 <= len(words) <= 5
        and len(line) <= 60
        and not line.rstrip().endswith((".", "!", "?", ":", ",", ";"))
    )


def _attribution_start(lines: list[str], i: int) -> int | None:
    """If line `i` ends an attribution ("On ... wrote:"), the line it starts on."""
    line = lines[i].rstrip()
    if len(line) > _MAX_MARKER_LINE:
        return None
    if not line.endswith((":", "：")):
        return i if pat.ATTRIBUTION_NO_COLON.match(line) else None
    if pat.ATTRIBUTION_NO_VERB.match(line):
        return i
    best: int | None = None
    joined = ""
    # Mail clients wrap a long attribution over two or three lines.
    for start in range(i, max(-1, i - 3), -1):
        part = lines[start].strip()
        if not part or (start < i and pat.QUOTED.match(lines[start])):
            break
        joined = f"{part} {joined}" if joined else part
        if len(joined) > _MAX_MARKER_LINE:
            break
        if not (pat.ATTRIBUTION.search(joined) or _dated_address(joined)):
            continue
        opens = pat.ATTRIBUTION_START.match(part)
        if opens and (start == i or any(ch.isdigit() for ch in joined)):
            return start
        if pat.CONTINUATION.match(part) and start > 0 and lines[start - 1].strip():
            continue  # "<a@b> wrote:" goes on from the line above
        if best is None and _plausible_attribution(lines, i, joined):
            best = start
    return best


def _dated_address(joined: str) -> bool:
    # "30.09.2017, 18.30, "Name" <a@b.c>:" -- a date or time, then an address and ":".
    tail = joined.rstrip()[-120:].rsplit(None, 1)[-1].lstrip("<(\"'")
    return bool(pat.ADDRESS_END.search(tail)) and bool(pat.DATE_OR_TIME.search(joined))


def _plausible_attribution(lines: list[str], i: int, joined: str) -> bool:
    # "X wrote:" without a date: trust it when it names an address or date, or
    # when a quote follows, so a sentence ending in "wrote:" is not taken.
    if "@" in joined or any(ch.isdigit() for ch in joined):
        return True
    follower = _next_nonblank(lines, i + 1)
    return follower is not None and bool(pat.QUOTED.match(lines[follower]))


def _next_nonblank(lines: list[str], i: int, limit: int = 6) -> int | None:
    for j in range(i, min(len(lines), i + limit)):
        if lines[j].strip():
            return j
    return None


def _mark_signature(lines: list[str], kinds: list[Kind], cut: int) -> None:
    """Mark the author's signature: after a "-- " line, or a mobile client's line."""
    for i in range(cut):
        if kinds[i] is not Kind.NEW:
            continue
        line = lines[i]
        if pat.SIG_DELIMITER.match(line) and (line == "-- " or _short_tail(kinds, i + 1, cut)):
            _mark_until_quote(lines, kinds, i, cut)
            return
        if _mobile_signature(line):
            kinds[i] = Kind.SIGNATURE
            # Mobile Outlook puts the quoted message right under its line, unmarked.
            for j in range(i + 1, cut):
                kinds[j] = Kind.QUOTED
            return
        if pat.LIST_FOOTER_RULE.match(line) and _list_footer(lines, i, cut):
            for j in range(i, cut):
                if kinds[j] is Kind.NEW:
                    kinds[j] = Kind.SIGNATURE
            return


def _mobile_signature(line: str) -> bool:
    if len(line) > 200:
        return False
    if pat.MOBILE_SIGNATURE.match(line):
        return True
    via = pat.SENT_VIA.match(line)
    return via is not None and bool(pat.DEVICE_WORDS.search(via.group("rest")))


def _short_tail(kinds: list[Kind], i: int, cut: int) -> bool:
    limit = min(cut, i + _SHORT_SIGNATURE * 2 + 1)
    end = i
    while end < limit and kinds[end] is Kind.NEW:
        end += 1
    return end - i <= _SHORT_SIGNATURE * 2


def _mark_until_quote(lines: list[str], kinds: list[Kind], i: int, cut: int) -> None:
    for j in range(i, cut):
        if kinds[j] is Kind.QUOTED and lines[j].strip():
            return
        kinds[j] = Kind.SIGNATURE


def _list_footer(lines: list[str], i: int, cut: int) -> bool:
    """Mailman's "____\\nR-devel at r-project.org mailing list\\nhttps://..." footer."""
    tail = [line for line in lines[i + 1 : min(cut, i + 6)] if line.strip()]
    return (
        1 <= len(tail) <= 4
        and bool(pat.LIST_FOOTER_NAME.search(tail[0]))
        and any("listinfo" in line or "mailing list" in line.lower() for line in tail)
    )


def _attach_blank_lines(lines: list[str], kinds: list[Kind]) -> None:
    # A blank line belongs to the block above it, so paragraphs stay together.
    previous: Kind | None = None
    for i, line in enumerate(lines):
        if line.strip():
            previous = kinds[i]
        elif previous is not None:
            kinds[i] = previous


def _join(lines: list[str], kinds: list[Kind], kind: Kind) -> str:
    picked = [line for line, k in zip(lines, kinds, strict=True) if k is kind]
    start = 0
    while start < len(picked) and not picked[start].strip():
        start += 1
    end = len(picked)
    while end > start and not picked[end - 1].strip():
        end -= 1
    return "\n".join(line.rstrip() for line in picked[start:end])
