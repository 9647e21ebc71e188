"""Search result snippets: a short window of a message around its best hits, marked.

Hits are found on folded tokens (the same `token_spans` the index uses), so a
search for "reunion" marks "Réunion" and a phrase marks only where its words
are adjacent. The window is the stretch of `width` characters that covers the
most different query words, then the most hits.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence

from bridge.core.query import Query, fold, token_spans

ELLIPSIS = "…"
_SPACE_RE = re.compile(r"\s+")
_MIN_WIDTH = 20


def _targets(query: Query) -> tuple[set[str], dict[str, list[tuple[str, ...]]]]:
    """Single words to mark, and phrases indexed by their first word."""
    singles: set[str] = set(query.terms)
    by_first: dict[str, list[tuple[str, ...]]] = {}
    for phrase in (*query.phrases, *query.subject):
        if len(phrase) == 1:
            singles.add(phrase[0])
        elif phrase:
            by_first.setdefault(phrase[0], []).append(phrase)
    return singles, by_first


def find_hits(text: str, query: Query) -> list[tuple[int, int, object]]:
    """(start, end, query item) of every hit in `text`, in order, overlaps merged."""
    singles, by_first = _targets(query)
    # fold() works character by character, so every token of `text` is a
    # substring of fold(text): a cheap test that skips tokenising most misses.
    folded = fold(text)
    if not any(word in folded for word in (*singles, *by_first)):
        return []
    spans = list(token_spans(text))
    hits: list[tuple[int, int, object]] = []
    for i, (start, end, token) in enumerate(spans):
        found: tuple[int, object] | None = (end, token) if token in singles else None
        for phrase in by_first.get(token, ()):
            window = spans[i : i + len(phrase)]
            if (
                len(window) == len(phrase)
                and all(w[2] == p for w, p in zip(window, phrase, strict=True))
                and (found is None or window[-1][1] > found[0])
            ):
                found = (window[-1][1], phrase)
        if found is None:
            continue
        if hits and start < hits[-1][1]:
            # Overlaps the previous hit (a phrase containing this word): extend it.
            last = hits[-1]
            hits[-1] = (last[0], max(last[1], found[0]), last[2])
        else:
            hits.append((start, found[0], found[1]))
    return hits


def _densest(hits: Sequence[tuple[int, int, object]], width: int) -> tuple[int, int]:
    """Indexes [first, last] of the run of hits fitting in `width` with the best score."""
    best = (0, 0)
    best_score = (0, 0)
    seen: Counter[object] = Counter()
    right = 0
    for left in range(len(hits)):
        if right < left:
            right = left
        while right < len(hits) and (right == left or hits[right][1] - hits[left][0] <= width):
            seen[hits[right][2]] += 1
            right += 1
        score = (len(seen), right - left)
        if score > best_score:
            best_score, best = score, (left, right - 1)
        seen[hits[left][2]] -= 1
        if not seen[hits[left][2]]:
            del seen[hits[left][2]]
    return best


def _window(text: str, lo: int, hi: int, width: int, *, before: int) -> tuple[int, int]:
    """Widen [lo, hi) to about `width` characters, then snap to word boundaries.

    `before` is the share (1/before) of the spare room put before `lo`: a
    third reads naturally, since text flows forward; 0 keeps `lo` as start.
    """
    extra = max(0, width - (hi - lo))
    start = max(0, lo - extra // before) if before else lo
    end = min(len(text), start + max(width, hi - lo))
    if before:
        start = max(0, min(start, end - width))
    if 0 < start < lo and not text[start - 1].isspace():
        space = _SPACE_RE.search(text, start, lo)
        if space:
            start = space.end()
    if hi < end < len(text) and not text[end].isspace():
        cut = max(text.rfind(" ", hi, end), text.rfind("\n", hi, end))
        if cut > hi:
            end = cut
    return start, end


def highlight(
    text: str,
    query: Query,
    *,
    width: int = 160,
    mark: tuple[str, str] = ("<mark>", "</mark>"),
    escape: bool = True,
) -> str:
    """About `width` characters of `text` around its densest hits, each hit in `mark`.

    Whitespace runs become one space; `…` shows where text was cut; with
    `escape` the text (not the marks) is HTML-escaped. Without hits, the
    start of the text.
    """
    width = max(width, _MIN_WIDTH)
    hits = find_hits(text, query)
    if hits:
        first, last = _densest(hits, width)
        start, end = _window(text, hits[first][0], hits[last][1], width, before=3)
    else:
        lead = len(text) - len(text.lstrip())
        start, end = _window(text, lead, lead, width, before=0)

    def plain(piece: str) -> str:
        piece = _SPACE_RE.sub(" ", piece)
        return html.escape(piece) if escape else piece

    out = [ELLIPSIS] if start > 0 else []
    cursor = start
    for hit_start, hit_end, _ in hits:
        if hit_end <= start or hit_start >= end:
            continue
        hit_start, hit_end = max(hit_start, start), min(hit_end, end)
        out += [plain(text[cursor:hit_start]), mark[0], plain(text[hit_start:hit_end]), mark[1]]
        cursor = hit_end
    out.append(plain(text[cursor:end]))
    if end < len(text):
        out.append(ELLIPSIS)
    snippet = "".join(out)
    return snippet.strip()
