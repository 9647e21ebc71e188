"""Pure text helpers: Message-IDs, subjects, addresses, line endings.

Used by `parse` and by later stages (threading, dedupe, rules). Every
function is linear in its input and never raises on odd text.
"""

from __future__ import annotations

import binascii
import codecs
import re
from itertools import permutations

# Message-IDs longer than this are junk (RFC 5322 caps a line at 998).
_MAX_ID = 500
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_BARE_ID = re.compile(r"^[^\s@<>()\"]+@[^\s@<>()\"]+$")
_WS = re.compile(r"\s+")

# C0 controls other than TAB and LF (CR is turned into LF first), and lone
# surrogates: PostgreSQL text cannot hold either.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")

# Reply and forward prefixes in the languages staff write in. Longer words
# first so "Antwort" wins over "Antw" and "Fwd" over "Fw".
_REPLY_WORDS = (
    "antwort|antw|réponse|rép|ref|réf|rif|res|odp|ynt|atb|vá|vs|sv|aw|re|r|"
    "回复|回覆|答复|返信|ΑΠ|ΣΧΕΤ|השב|Отв|Ответ"
)
_FORWARD_WORDS = "doorst|fwd|fw|wg|tr|rv|enc|pd|vb|vl|fs|i|İlt|ilt|转发|轉寄|転送|ΠΡΘ|הועבר|Пересл"
# A counter such as "Re[2]:", "Re(3):", "Re^2:" and a space before the
# colon (French "RE :") are accepted; a full-width colon too.
_COUNTER = r"(?:\s*(?:\[\d+\]|\(\d+\)|\^\d+))?\s*[:：]"
_REPLY_PREFIX = re.compile(rf"(?:{_REPLY_WORDS}){_COUNTER}\s*", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(rf"(?:{_FORWARD_WORDS}){_COUNTER}\s*", re.IGNORECASE)
_LIST_TAG = re.compile(r"\[[^\[\]\n]{1,40}\]\s*")
_FWD_SUFFIX = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Drop NUL and other C0 controls (but TAB, LF), replace lone
    surrogates with U+FFFD, turn CRLF and CR into LF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text)


def fold_whitespace(text: str) -> str:
    """Every run of whitespace (folded header lines too) becomes one space."""
    return _WS.sub(" ", text).strip()


def strip_comments(value: str) -> str:
    """Remove (nested) comments outside angle brackets, in one pass."""
    if "(" not in value:
        return value
    out: list[str] = []
    depth = 0
    in_angle = False
    for ch in value:
        if depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            continue
        if ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "(" and not in_angle:
            depth = 1
            out.append(" ")
            continue
        out.append(ch)
    return "".join(out)


def _valid_id(token: str) -> str | None:
    token = _WS.sub("", token)
    if not token or len(token) > _MAX_ID or "<" in token or ">" in token:
        return None
    return token


def normalize_message_id(value: str) -> str | None:
    """The id inside `<...>` (or a bare `local@domain`), case kept, or None.

    Case is kept as public-inbox does: ids are compared byte for byte.
    """
    value = strip_comments(clean_text(value))
    found = _ANGLE_ID.search(value)
    if found:
        return _valid_id(found.group(1))
    bare = value.strip()
    if _BARE_ID.match(bare):
        return _valid_id(bare)
    # Some mailers omit the brackets and the domain: keep one plain token.
    if bare and not _WS.search(bare) and "<" not in bare and ">" not in bare:
        return _valid_id(bare)
    return None


def parse_id_list(value: str) -> tuple[str, ...]:
    """All ids of a References / In-Reply-To value, in order, without
    duplicates; junk such as "(message from X on ...)" is dropped."""
    value = strip_comments(clean_text(value))
    ids: list[str] = []
    found = _ANGLE_ID.findall(value)
    if found:
        candidates = found
    else:
        # No brackets at all: keep only tokens that look like ids, so
        # "Kurt Hornik's message of Tue, 8 Apr 1997" yields nothing.
        candidates = [t for t in value.split() if _BARE_ID.match(t)]
    seen: set[str] = set()
    for token in candidates:
        ident = _valid_id(token)
        if ident and ident not in seen:
            seen.add(ident)
            ids.append(ident)
    return tuple(ids)


def _strip_prefixes(subject: str) -> tuple[str, bool, bool]:
    """Remove list tags and reply/forward prefixes; say which were seen."""
    text = fold_whitespace(subject)
    reply = forward = False
    while True:
        tag = _LIST_TAG.match(text)
        if tag:
            text = text[tag.end() :]
            continue
        match = _REPLY_PREFIX.match(text)
        if match:
            reply = True
            text = text[match.end() :]
            continue
        match = _FORWARD_PREFIX.match(text)
        if match:
            forward = True
            text = text[match.end() :]
            continue
        break
    if _FWD_SUFFIX.search(text):
        forward = True
        text = _FWD_SUFFIX.sub("", text)
    return text, reply, forward


def strip_reply_prefixes(subject: str) -> tuple[tuple[str, ...], str]:
    """(list tags, the rest) of a subject with its leading reply and forward prefixes
    removed, wherever they stand among the tags: "RE: [Sales] AW: x" gives
    (("[Sales]",), "x"). For the subject of a reply, which keeps the tags."""
    text = subject
    tags: list[str] = []
    while True:
        tag = _LIST_TAG.match(text)
        if tag:
            if tag.group(0).strip() not in tags:
                tags.append(tag.group(0).strip())
            text = text[tag.end() :]
            continue
        match = _REPLY_PREFIX.match(text) or _FORWARD_PREFIX.match(text)
        if match:
            text = text[match.end() :]
            continue
        break
    return tuple(tags), text.strip()


def normalize_subject(subject: str) -> str:
    """The subject without list tags and reply/forward prefixes, casefolded."""
    return _strip_prefixes(subject)[0].strip().casefold()


def is_reply_subject(subject: str) -> bool:
    return _strip_prefixes(subject)[1]


def is_forward_subject(subject: str) -> bool:
    return _strip_prefixes(subject)[2]


# --- pipermail address obfuscation -------------------------------------

_AT_FORM = re.compile(r"^\s*([^\s@()<>\"]+)\s+at\s+([^\s@()<>\"]+\.[^\s@()<>\"]+)(.*)$", re.S)
_MANGLED_SEP = " @end|ng |rom "
# The newer Mailman mangling is lossy: a, s, "." all become "@" and
# i, l, f all become "|". Common domains are recognised by mangling the
# real name the same way and comparing.
_MANGLE = str.maketrans({"a": "@", "s": "@", ".": "@", "i": "|", "l": "|", "f": "|"})
_KNOWN_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "debian.org",
    "statistik.tu-dortmund.de",
    "stat.math.ethz.ch",
    "r-project.org",
    "fedoraproject.org",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "protonmail.com",
    "uiowa.edu",
    "auckland.ac.nz",
    "manchester.ac.uk",
    "noaa.gov",
    "mayo.edu",
    "wu.ac.at",
    "me.com",
    "gmx.de",
    "effectivedefense.org",
    "dcn.davis.ca.us",
)
_MANGLED_DOMAINS = {d.translate(_MANGLE): d for d in _KNOWN_DOMAINS}


def _unmangle_fallback(text: str) -> str:
    """A stable, valid guess when nothing better is known."""
    return text.replace("|", "i").replace("@", "a")


def _unmangle_domain(domain: str) -> str:
    known = _MANGLED_DOMAINS.get(domain)
    if known:
        return known
    cut = domain.rfind("@")
    if cut <= 0:
        return _unmangle_fallback(domain)
    # The last "@" most likely stands for the dot before the TLD.
    return _unmangle_fallback(domain[:cut]) + "." + _unmangle_fallback(domain[cut + 1 :])


def _unmangle_local(local: str, name: str) -> str:
    """Match the local part against forms of the display name."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.casefold()) if w][:4]
    if words:
        for count in range(len(words), 0, -1):
            for combo in permutations(words, count):
                for sep in (".", "", "-", "_"):
                    candidate = sep.join(combo)
                    if candidate.translate(_MANGLE) == local:
                        return candidate
                if count == 2:
                    initial = combo[0][0] + combo[1]
                    if initial.translate(_MANGLE) == local:
                        return initial
    return _unmangle_fallback(local)


def deobfuscate_address(text: str) -> str:
    """Undo pipermail address hiding in a From value.

    `user at example.org (Name)` becomes `user@example.org (Name)`; the
    newer `us|ng @end|ng |rom ex@mp|e@org (Name)` is guessed as well as
    the loss allows, lower-cased. Other values come back unchanged.
    """
    if _MANGLED_SEP in text:
        head, _, tail = text.partition(_MANGLED_SEP)
        local = head.strip().rsplit(None, 1)[-1] if head.strip() else ""
        domain, _, rest = tail.strip().partition(" ")
        name = rest.strip()
        if name.startswith("(") and name.endswith(")"):
            name = name[1:-1]
        address = f"{_unmangle_local(local.lower(), name)}@{_unmangle_domain(domain.lower())}"
        return f"{address} {rest.strip()}".strip()
    match = _AT_FORM.match(text)
    if match:
        return f"{match.group(1)}@{match.group(2)}{match.group(3)}"
    return text


# --- header and body decoding --------------------------------------------

# Hand-written rather than `email.header.decode_header`: that raises on
# unknown charsets and broken base64, and loses the spaces between plain
# and encoded words; here every failure degrades to readable text.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,60})\?([bBqQ])\?([^?\s]*)\?=")
# Printable ASCII with single spaces and no "=?": already clean and folded.
_PLAIN_HEADER = re.compile(r"(?:[!-<>-~]|=(?!\?)| (?! ))*")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
_ENCODED_GAP = re.compile(r"[ \t\r\n]+")
# Codecs Python knows that are not mail charsets, or cost more than linear.
_REFUSED_CODECS = {"punycode", "idna", "unicode_escape", "raw_unicode_escape", "utf_16", "utf_32"}


def _codec(charset: str | None) -> str | None:
    if not charset:
        return None
    name = charset.strip().strip('"').split("*", 1)[0].lower()
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED_CODECS:
        return None
    if info.name in ("ascii",):
        return None  # mislabelled 8-bit text is common: guess instead
    return info.name


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Bytes as text: the declared charset if known, else UTF-8, cp1252,
    latin-1 in that order (the last never fails)."""
    codec = _codec(charset)
    if codec:
        try:
            return data.decode(codec, "replace")
        except Exception:  # some codecs raise despite errors="replace"
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Mostly valid UTF-8 with a broken byte or two stays UTF-8; text where
    # most 8-bit bytes are invalid UTF-8 is a legacy single-byte charset.
    lenient = data.decode("utf-8", "replace")
    broken = lenient.count("\ufffd")
    if broken * 4 < sum(1 for ch in lenient if ord(ch) > 127) - broken:
        return lenient
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_word(charset: str, encoding: str, text: str) -> bytes:
    if encoding in "bB":
        cleaned = _NOT_BASE64.sub("", text)
        if len(cleaned) % 4 == 1:  # a stray character cannot be decoded
            cleaned = cleaned[:-1]
        return binascii.a2b_base64(cleaned + "=" * (-len(cleaned) % 4))
    return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)


def decode_encoded_words(value: str) -> str:
    """RFC 2047 decoding, tolerant: adjacent words of one charset are
    joined before decoding (multi-byte characters split across words)."""
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0
    last_end = -1
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos : match.start()]
        charset = match.group(1)
        # Whitespace between two encoded words is dropped (RFC 2047 6.2).
        joined = last_end == pos and (not gap or _ENCODED_GAP.fullmatch(gap) is not None)
        if pending and (not joined or charset != pending_charset):
            out.append(decode_bytes(b"".join(pending), pending_charset))
            pending = []
        if not joined:
            out.append(gap)
        try:
            pending.append(_decode_word(charset, match.group(2), match.group(3)))
        except (binascii.Error, ValueError):
            pending.append(match.group(0).encode("ascii", "replace"))
        pending_charset = charset
        pos = last_end = match.end()
    if pending:
        out.append(decode_bytes(b"".join(pending), pending_charset))
    out.append(value[pos:])
    return "".join(out)


def decode_header_value(value: object, words: bool = True) -> str:
    """A raw header value (str with surrogate-escaped 8-bit bytes, as the
    stdlib parser leaves them) as clean, folded Unicode."""
    text = str(value)
    if text.isascii() and _PLAIN_HEADER.fullmatch(text):
        return text.strip()  # the common case: nothing to decode or fold
    if _SURROGATES.search(text):
        text = decode_bytes(text.encode("ascii", "surrogateescape"))
    if words and "=?" in text:
        text = decode_encoded_words(text)
    return fold_whitespace(clean_text(text))


def decode_payload(data: bytes, charset: str | None) -> str:
    return clean_text(decode_bytes(data, charset))


_PATH_PART = re.compile(r"^.*[/\\]")
_FILENAME_JUNK = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def safe_filename(name: str) -> str:
    """No directories, no control or bidi-override characters, bounded."""
    name = _FILENAME_JUNK.sub("", _SURROGATES.sub("\ufffd", name))
    name = _PATH_PART.sub("", name).strip().lstrip(".")
    return name[:255]
