"""What a reply written in Bridge says in its headers: subject, threading ids, recipients.

No I/O: the parent's fields come in, header values go out. The rules are
those of the mail clients people answer from, so a reply sent from the viewer
threads and addresses like one sent from Outlook or Thunderbird:

- Subject: "Re: " and the parent's subject, without stacking reply or forward
  prefixes in any language ("RE: AW: TR: Budget" gives "Re: Budget"); a
  list tag stays where lists put it ("Re: [Sales] Budget").
- References: the parent's References (or its In-Reply-To when it has none)
  and the parent's Message-ID (RFC 5322 3.6.4), trimmed to the first id and
  the newest ones when the chain grows long, as RFC 5537 3.4.4 allows.
- Recipients, "all": To the parent's Reply-To (else From) and its To, Cc its
  Cc, as Outlook does; never the replier, never the bridge's own addresses
  (its sub-addresses included), never anyone the parent only Bcc'd (Bcc is
  not an input). "sender": the parent's Reply-To, else From; replying to
  one's own message goes to its To instead, as Gmail does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.core.message import Address
from bridge.core.normalize import fold_whitespace, strip_reply_prefixes

ReplyMode = Literal["all", "sender"]

REPLY_PREFIX = "Re: "
# Enough ids to thread in every client, short enough that the header stays a
# few folded lines: the root and the newest ones are what clients use.
MAX_REFERENCES = 20
MAX_REFERENCES_CHARS = 2000
_ID = re.compile(r"<[^<>\s]+>")


def reply_subject(parent_subject: str) -> str:
    """ "Re: " and the parent's subject without its reply and forward prefixes."""
    tags, rest = strip_reply_prefixes(fold_whitespace(parent_subject or "").strip())
    return (REPLY_PREFIX + " ".join(part for part in (*tags, rest) if part)).rstrip()


def reply_references(
    parent_message_id: str,
    parent_references: Sequence[str] = (),
    parent_in_reply_to: Sequence[str] = (),
) -> tuple[str, tuple[str, ...]]:
    """(In-Reply-To, References) of a reply: ids as `<id>`, oldest first, no repeats."""
    parent = _bracketed(parent_message_id)
    if parent is None:
        raise ValueError(f"the parent's Message-ID {parent_message_id!r} is not an id")
    chain = parent_references or parent_in_reply_to[:1]
    ids: list[str] = []
    for value in (*chain, parent):
        ident = _bracketed(value)
        if ident is not None and ident not in ids:
            ids.append(ident)
    if ids[-1] != parent:  # a chain naming the parent earlier: it goes last
        ids.remove(parent)
        ids.append(parent)
    return parent, _trimmed(ids)


def _bracketed(value: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    if not text.startswith("<"):
        text = f"<{text}>"
    return text if _ID.fullmatch(text) else None


def _trimmed(ids: list[str]) -> tuple[str, ...]:
    """The first id and as many of the newest as fit the limits."""
    if len(ids) <= MAX_REFERENCES and sum(len(i) + 1 for i in ids) <= MAX_REFERENCES_CHARS:
        return tuple(ids)
    first, newest = ids[0], list[str]()
    used = len(first) + 1
    for ident in reversed(ids[1:]):
        if len(newest) + 1 >= MAX_REFERENCES or used + len(ident) + 1 > MAX_REFERENCES_CHARS:
            break
        newest.append(ident)
        used += len(ident) + 1
    return (first, *reversed(newest))


@dataclass(frozen=True, slots=True)
class ReplyRecipients:
    to: tuple[Address, ...]
    cc: tuple[Address, ...]

    @property
    def everyone(self) -> tuple[Address, ...]:
        return (*self.to, *self.cc)


def reply_recipients(
    mode: ReplyMode,
    replier: str,
    *,
    sender: Sequence[Address],
    reply_to: Sequence[Address] = (),
    to: Sequence[Address] = (),
    cc: Sequence[Address] = (),
    own_addresses: Iterable[str] = (),
) -> ReplyRecipients:
    """Who a reply to the parent goes to; the parent's Bcc is never an input."""
    me = replier.strip().lower()
    own = {a.strip().lower() for a in own_addresses if a.strip()}
    answer_to = list(reply_to) or list(sender)
    replying_to_self = bool(answer_to) and all(a.address == me for a in answer_to)
    if mode == "sender":
        chosen = list(to) if replying_to_self else answer_to
        return ReplyRecipients(_keep(chosen, me, own, set()), ())
    seen: set[str] = set()
    main = _keep([*answer_to, *to], me, own, seen)
    copies = _keep(cc, me, own, seen)
    if not main:  # only copies left (the parent was To the replier alone)
        return ReplyRecipients(copies, ())
    return ReplyRecipients(main, copies)


def _keep(
    addresses: Iterable[Address], me: str, own: set[str], seen: set[str]
) -> tuple[Address, ...]:
    kept = []
    for item in addresses:
        address = item.address.strip().lower()
        if not address or "@" not in address or address == me or address in seen:
            continue
        if _is_own(address, own):
            continue
        seen.add(address)
        kept.append(Address(name=item.name, address=address))
    return tuple(kept)


def _is_own(address: str, own: set[str]) -> bool:
    if address in own:
        return True
    local, _, domain = address.rpartition("@")
    base = local.split("+", 1)[0]
    return f"{base}@{domain}" in own


def quoted(text: str) -> str:
    """`text` quoted for a reply: "> " before each line, ">" before a quoted or empty one."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    return "\n".join(
        ">" + line if not line or line.startswith(">") else "> " + line for line in lines
    )


def reply_body(text: str, attribution: str, parent_text: str) -> str:
    """The reply's text: the person's words, then the attribution and the parent's words quoted.

    The text comes first (the top-posting companies write in); the quote is
    the parent's own words only, never its quoted history, so a long chain
    does not grow by its whole length at every reply.
    """
    mine = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    theirs = parent_text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    if not theirs:
        return mine + "\n"
    return f"{mine}\n\n{attribution}\n{quoted(theirs)}\n"
