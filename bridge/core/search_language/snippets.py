"""Search result snippets: a short window of a message around its best hits, marked.

Hits are found on folded tokens (the same `token_spans` the index uses), so a
search for "reunion" marks "Réunion", a phrase marks only where its words
are adjacent and `contra*` marks "Contract". The window is the stretch of
`width` characters that covers the most different query words, then the
most hits.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence

from bridge.core.search_language.query import Query, fold, token_spans

ELLIPSIS = "…"
_SPACE_RE = re.compile(r"\s+")
_MIN_WIDTH = 20


def _targets(
    query: Query,
) -> tuple[set[str], tuple[str, ...], dict[str, list[tuple[tuple[str, ...], bool]]]]:
    """Single words to mark, single-word prefixes, and phrases (tokens, whether
    the last is a prefix) indexed by their first word."""
    singles: set[str] = set()
    prefixes: set[str] = set()
    by_first: dict[str, list[tuple[tuple[str, ...], bool]]] = {}
    for leaf in query.leaves():
        if len(leaf.tokens) == 1:
            (prefixes if leaf.prefix else singles).add(leaf.tokens[0])
        elif leaf.tokens:
            by_first.setdefault(leaf.tokens[0], []).append((leaf.tokens, leaf.prefix))
    # Longest first, so a hit is named by the most precise prefix it has.
    return singles, tuple(sorted(prefixes, key=len, reverse=True)), by_first


def _phrase_at(
    spans: list[tuple[int, int, str]], i: int, tokens: tuple[str, ...], prefix: bool
) -> bool:
    """Whether the phrase `tokens` starts at span `i`."""
    window = spans[i : i + len(tokens)]
    if len(window) != len(tokens):
        return False
    *head, last = tokens
    if not all(w[2] == t for w, t in zip(window, head, strict=False)):
        return False
    token = window[-1][2]
    return token.startswith(last) if prefix else token == last


def find_hits(text: str, query: Query) -> list[tuple[int, int, object]]:
    """(start, end, query item) of every hit in `text`, in order, overlaps merged."""
    singles, prefixes, by_first = _targets(query)
    # fold() works character by character, so every token of `text` is a
    # substring of fold(text): a cheap test that skips tokenising most misses.
    folded = fold(text)
    if not any(word in folded for word in (*singles, *prefixes, *by_first)):
        return []
    spans = list(token_spans(text))
    hits: list[tuple[int, int, object]] = []
    for i, (start, end, token) in enumerate(spans):
        found: tuple[int, object] | None = (end, token) if token in singles else None
        if found is None and prefixes and token.startswith(prefixes):
            found = (end, next(p + "*" for p in prefixes if token.startswith(p)))
        for phrase, prefix in by_first.get(token, ()):
            if _phrase_at(spans, i, phrase, prefix) and (
                found is None or spans[i + len(phrase) - 1][1] > found[0]
            ):
                found = (spans[i + len(phrase) - 1][1], phrase)
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


# Marks for `split_marks`: control characters that mail text does not carry.
PLAIN_MARK = ("\x02", "\x03")


def split_marks(
    snippet: str, mark: tuple[str, str] = PLAIN_MARK
) -> tuple[str, list[tuple[int, int]]]:
    """A snippet `highlight`ed with `mark` (and escape=False) as plain text and its hits.

    The hits are [start, end) offsets in the plain text, in characters (code
    points): for JSON, where markup in the text would be read as text.
    """
    opening, closing = mark
    plain: list[str] = []
    hits: list[tuple[int, int]] = []
    length = 0
    start: int | None = None
    for piece in re.split(f"({re.escape(opening)}|{re.escape(closing)})", snippet):
        if piece == opening:
            start = length
        elif piece == closing:
            if start is not None and length > start:
                hits.append((start, length))
            start = None
        else:
            plain.append(piece)
            length += len(piece)
    return "".join(plain), hits
