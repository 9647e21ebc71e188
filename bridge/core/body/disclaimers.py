"""Legal notices at the end of a message ("This e-mail and any attachments are confidential…").

Mail servers append them to every message, often ten lines or more, in
English, French, German or all three. The viewer folds them like quoted
history. They are recognised by what they say, paragraph by paragraph:
a notice speaks of *this* message (or the information in it) AND of at
least two of confidentiality, the intended recipient or receipt in error,
forbidden use, and liability or viruses, at some length (150
characters or more). A person who writes about
confidential matters rarely does all of that in one paragraph, and only
a notice that closes the text, with nothing the person wrote after it
(short lines such as a company's registration are allowed), is folded.

Every pattern is matched against one paragraph (cut at `_MAX_PARAGRAPH`
characters), none nests quantifiers, and the paragraphs are walked twice:
the work is linear in the size of the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAX_PARAGRAPH = 4000
# A sentence a person writes ("This is confidential, do not forward it") is
# shorter than any notice: the shortest real ones run to some 200 characters.
_MIN_NOTICE = 150
# No paragraph of a real notice runs longer; a longer one is the person's text.
_MAX_LINES = 40
# Lines a paragraph after a notice may have without saying anything legal
# ("Registered in England No. 1234567", a web address, a closing rule).
_SHORT = 3

# The message itself, or what it carries.
_SELF = re.compile(
    r"\b(?:this|the\s+present|the\s+above)\s+(?:e-?\s?mail|message|communication|transmission|"
    r"electronic\s+(?:mail|message|transmission))|"
    r"\b(?:e-?mail|message)s?\s+(?:and|or)\s+(?:any|its)\s+(?:files|attachments?|enclosures?)|"
    r"\b(?:files|attachments?)\s+transmitted\s+with\s+it|"
    r"\binformation\s+(?:contained\s+)?in\s+this\b|"
    r"\b(?:ce|le\s+présent|le\s+present|cet)\s+(?:message|courriel|e-?mail|mail)\b|"
    r"\bpi[eè]ces?\s+jointes?|"
    r"\b(?:diese|dieser|dieses|diese\s+beigefügte)\s+(?:e-?mail|nachricht|mail|mitteilung)\b|"
    r"\b(?:e-?mail|nachricht)\s+(?:und|sowie)\s+(?:alle\s+|etwaige\s+)?(?:anhänge|anlagen)",
    re.IGNORECASE,
)
_CONFIDENTIAL = re.compile(
    r"confidential|privileged|privilege|proprietary|attorney[\s/-]+client|"
    r"confidentiel|confidentialit[eé]|secret\s+professionnel|"
    r"vertraulich|rechtlich\s+geschützt|geheimhaltung",
    re.IGNORECASE,
)
_RECIPIENT = re.compile(
    r"intended\s+(?:solely\s+|only\s+|exclusively\s+)?(?:for|recipient|addressee|to\s+be)|"
    r"\baddressee|received\s+(?:this|it)[\w\s-]{0,40}\s(?:in\s+error|by\s+mistake)|"
    r"\bin\s+error\b|notify\s+(?:the\s+)?sender|delete\s+(?:it|this|the)|"
    r"destinataires?|par\s+erreur|exp[eé]diteur|d[eé]truire|"
    r"adressat|empfänger|irrtümlich|absender|vernichten|löschen",
    re.IGNORECASE,
)
_FORBIDDEN = re.compile(
    r"prohibited|forbidden|unauthori[sz]ed|not\s+(?:read|copy|use|disclose)|"
    r"dissemination|disseminate|disclos|distribution|copying|"
    r"interdite?s?|diffusion|divulgation|non\s+autoris[eé]e?|"
    r"nicht\s+gestattet|unbefugt|untersagt|weitergabe|unerlaubt",
    re.IGNORECASE,
)
_LIABILITY = re.compile(
    r"virus|viruses|liable|liability|integrity|responsibility|"
    r"responsabilit[eé]|int[eé]grit[eé]|"
    r"haftung|haften|verantwortung",
    re.IGNORECASE,
)
_KINDS = (_CONFIDENTIAL, _RECIPIENT, _FORBIDDEN, _LIABILITY)
# A rule drawn around a notice: "*****", "-----", "_____", "=====".
_RULE = re.compile(r"^\s*[-=_*~#]{3,}\s*$")
# A short title above a notice: "CONFIDENTIALITY NOTICE", "Disclaimer:", "LEGAL STUFF".
_TITLE_WORDS = re.compile(
    r"notice|disclaimer|confidential|privileged|legal|important|avertissement|"
    r"mentions?\s+l[eé]gales?|haftungsausschluss|hinweis|vertraulich",
    re.IGNORECASE,
)
_STRONG_TITLE = re.compile(
    r"notice|disclaimer|confidentiality|avertissement|haftungsausschluss|hinweis", re.IGNORECASE
)


def _is_title(line: str) -> bool:
    """A line that only names the notice below it (a job title like "Legal Counsel" is not)."""
    text = line.strip()
    if not text or len(text) > 50 or len(text.split()) > 6 or not _TITLE_WORDS.search(text):
        return False
    bare = text.strip("*+=-_~#:. ")
    return bool(_STRONG_TITLE.search(text)) or text.endswith(":") or bare != text or bare.isupper()


@dataclass(frozen=True, slots=True)
class Folded:
    """A text split at the legal notice that closes it; `notice` is "" when there is none."""

    text: str
    notice: str


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # first line
    end: int  # one past the last line
    text: str
    rule: bool


def is_notice(paragraph: str) -> bool:
    """Whether one paragraph reads as a legal notice about the message that carries it."""
    text = paragraph[:_MAX_PARAGRAPH]
    if len(text) < _MIN_NOTICE or not _SELF.search(text):
        return False
    return sum(1 for kind in _KINDS if kind.search(text)) >= 2


def split_notice(text: str) -> Folded:
    """`text` without the legal notice at its end, and that notice (see the module docstring)."""
    lines = text.split("\n")
    blocks = _blocks(lines)
    # tail_ok[i]: blocks i.. may all follow a notice (rules, notices, legal or short ones).
    tail_ok = [True] * (len(blocks) + 1)
    for i in range(len(blocks) - 1, -1, -1):
        tail_ok[i] = tail_ok[i + 1] and _may_follow(blocks[i])
    for i, block in enumerate(blocks):
        if block.rule or not tail_ok[i + 1]:
            continue
        offset = _notice_start(lines[block.start : block.end])
        if offset is None:
            continue
        first = block.start + offset
        if offset == 0:
            start = i
            while start > 0 and (blocks[start - 1].rule or _is_title(blocks[start - 1].text)):
                start -= 1
            first = blocks[start].start
        kept = "\n".join(lines[:first]).rstrip()
        if not kept.strip():
            return Folded(text, "")  # nothing but the notice: never fold a whole text
        return Folded(kept, "\n".join(lines[first:]).strip("\n"))
    return Folded(text, "")


def _notice_start(lines: list[str]) -> int | None:
    """The line of a paragraph where a notice starts, if one runs to its end.

    A notice glued to a signature ("Jane Doe\nPhone …\nThis e-mail is
    confidential …") starts at a line that opens a sentence and names the
    message or its confidentiality; the lines above it stay.
    """
    if len(lines) > _MAX_LINES or not is_notice("\n".join(lines)):
        return None
    for j, line in enumerate(lines):
        opens = j == 0 or len(lines[j - 1].strip()) <= 40 or lines[j - 1].rstrip()[-1:] in ".!?:;)"
        if not opens or not (_SELF.search(line) or _CONFIDENTIAL.search(line)):
            continue
        if is_notice("\n".join(lines[j:])):
            while j > 0 and _is_title(lines[j - 1]):
                j -= 1
            return j
        return None  # the notice's own first line: later ones are shorter still
    return None


def _blocks(lines: list[str]) -> list[_Block]:
    """Paragraphs (runs of non-blank lines) and rule lines, in order."""
    blocks: list[_Block] = []
    start: int | None = None
    for i, line in enumerate([*lines, ""]):
        rule = bool(_RULE.match(line))
        if (not line.strip() or rule) and start is not None:
            blocks.append(_Block(start, i, "\n".join(lines[start:i]), False))
            start = None
        if rule:
            blocks.append(_Block(i, i + 1, line, True))
        elif line.strip() and start is None:
            start = i
    return blocks


def _may_follow(block: _Block) -> bool:
    if block.rule:
        return True
    if block.text.lstrip().startswith(">"):
        return False  # quoted text the person answers below
    if block.end - block.start <= _SHORT:
        return True
    text = block.text[:_MAX_PARAGRAPH]
    return bool(_SELF.search(text)) or any(kind.search(text) for kind in _KINDS)
