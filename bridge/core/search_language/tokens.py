"""Search tokens: text → folded tokens, the same for indexing and for queries.

Both backends must give the same results, so tokenising and accent folding
happen here, identically for indexing and querying, and the backends only see
folded tokens. The rules copy SQLite FTS5's `unicode61 remove_diacritics 2`
(the embedded default), so FTS5 finds every token we produce even when it
indexes the raw text:

* a token is a maximal run of letters, digits (categories L*, N*) and
  private-use characters (Co); everything else separates, including `_`,
  `'`, `-`, `.`, `@` and most combining marks. The combining accents SQLite
  treats as removable (U+0300 acute, U+0308 diaeresis, ...) stay inside the
  token and are dropped, so a decomposed "re" U+0301 "union" is "reunion".
* each code point is case-folded to ONE code point (µ→μ, ς→σ, ſ→s, but ß and
  the ligatures œ, æ, ﬁ stay: SQLite never expands a character), and Latin
  letters lose their accents (é→e, ü→u; ø, ł, đ have no accent to remove;
  Greek and Cyrillic keep theirs).

Measured against SQLite 3.40 over all 282,230 assigned code points, 3,638
differ: characters newer than SQLite's Unicode tables (Cherokee and Georgian
case pairs, scripts and symbols added since Unicode 6), and ǡ/Ǡ, which SQLite
leaves accented. No library does this exact folding (unidecode
transliterates, PyICU is a heavy native dependency), hence this small one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from types import MappingProxyType

# Combining marks that unicode61 keeps inside a token and then drops.
_REMOVABLE_MARKS = (
    "\u0300-\u0304\u0306-\u030c\u030f\u0311\u031b\u0323-\u0328\u032d\u032e\u0330\u0331"
)
_PRIVATE_USE = "\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd"
# `[^\W_]` is exactly str.isalnum(): letters and every kind of number.
TOKEN_RE = re.compile(rf"(?:[^\W_]|[{_REMOVABLE_MARKS}{_PRIVATE_USE}])+")
_MARK_RE = re.compile(f"[{_REMOVABLE_MARKS}]")

# SQLite removes accents from Latin letters only.
_LATIN_RANGES = ((0x00C0, 0x0250), (0x1E00, 0x1F00))


def _fold_char(ch: str) -> str:
    folded = ch.casefold()
    if len(folded) != 1:
        # Full case folding expands (ß→ss, ﬁ→fi); SQLite maps one to one.
        folded = ch.lower()[0]
    code = ord(folded)
    if any(lo <= code < hi for lo, hi in _LATIN_RANGES):
        parts = unicodedata.normalize("NFD", folded)
        # é→e, but letters with no decomposition (ø, ł, đ) or a non-ASCII
        # base (ǣ) stay, as in SQLite.
        if len(parts) > 1 and parts[0].isascii():
            return parts[0]
    elif _MARK_RE.fullmatch(folded):
        return ""
    return folded


def _fold_table() -> MappingProxyType[int, str]:
    # Precomputed for ASCII and Latin so European text folds with one
    # str.translate; it is read-only, not mutable state.
    codes = list(range(0x0000, 0x0250)) + list(range(0x0300, 0x0332)) + list(range(0x1E00, 0x1F00))
    table = {c: _fold_char(chr(c)) for c in codes}
    return MappingProxyType({c: f for c, f in table.items() if f != chr(c)})


_FOLD_TABLE = _fold_table()
# What the table leaves: runs of characters past Latin (no accents to strip).
_UNTABLED_RE = re.compile("[^\x00-\u024f\u0300-\u0331\u1e00-\u1eff]+")


def _fold_run(match: re.Match[str]) -> str:
    run = match.group()
    folded = run.casefold()
    # casefold never shrinks a character, so equal length means one to one;
    # a result back in Latin (Angstrom sign → å) may still have an accent.
    if len(folded) == len(run) and _UNTABLED_RE.fullmatch(folded):
        return folded
    return "".join(map(_fold_char, run))


def fold(text: str) -> str:
    """Lower-case `text` and remove Latin accents, character by character, like unicode61."""
    folded = text.translate(_FOLD_TABLE)
    if folded.isascii():
        return folded
    return _UNTABLED_RE.sub(_fold_run, folded)


def token_spans(text: str) -> Iterator[tuple[int, int, str]]:
    """Yield (start, end, folded token) for each token of `text`, in order."""
    for match in TOKEN_RE.finditer(text):
        token = fold(match.group())
        if token:
            yield match.start(), match.end(), token


def tokenize(text: str) -> list[str]:
    """The folded tokens of `text`, in order: what both search backends index."""
    folded = (fold(word) for word in TOKEN_RE.findall(text))
    return [token for token in folded if token]
