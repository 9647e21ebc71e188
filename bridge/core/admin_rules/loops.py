"""Loop and noise safety: the bridge's own mail, and mail that is going round in circles.

Pure: the bridge's identity (its Message-ID domain and sender address) comes
in as an argument, never from the host name or the clock.

- Own mail (digests, sign-in links, anything the bridge sends later) carries
  a Message-ID at the bridge's domain and the `X-Bridge-Origin` header whose
  value is that domain. Either one, when it names this bridge, marks the copy
  as own mail: it is kept and counted as skipped, never bridged or answered.
  Mail a person wrote in Bridge says `X-Bridge-Origin: <domain>; person`:
  it is theirs, and bridged when it comes back (it merges with the copy
  stored when it was sent).
- More than `MAX_RECEIVED` `Received` headers means a mail loop (RFC 5321
  section 6.3 suggests loop detection by counting them; Postfix and Exim
  both stop at 50 or so by default): the copy goes to quarantine.
- An auto-reply (RFC 3834 headers, or an out-of-office subject) to a
  Message-ID at the bridge's domain answers a digest: own mail too, and so
  is an "unsubscribe" mailed to the bridge's address (a digest's mailto).
- Mail to a digest's reply address (`bridge+r.<token>@...`) is answered
  over SMTP/LMTP only (`ingest/digest_replies.py`); a copy of it arriving
  another way (journaling, a Sent folder) is own mail too: its words are
  already in the reply Bridge sent on.
- `automatic` says why a message was written by a machine (a bounce, an
  auto-reply, bulk mail): such mail to a reply address is never sent on.
- Other auto-replies (RFC 3834) and bounces (RFC 3464) are not decided here: the
  parser flags them (`Flag.AUTO_REPLY`, `Flag.BOUNCE`), the store keeps
  them flagged, and rules may match on those flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.core.message import Flag, ParsedMessage
from bridge.core.outgoing.reply_address import is_reply_address

# The header the bridge puts on every message it sends. Its value is the
# bridge's Message-ID domain, so two bridges of two companies mailing each
# other each only drop their own mail.
ORIGIN_HEADER = "X-Bridge-Origin"
# `X-Bridge-Origin: <domain>; person` marks mail a person wrote in Bridge.
PERSON_MAIL = "person"
MAX_RECEIVED = 50
OWN_MAIL_RULE = "builtin:own-mail"
LOOP_REASON = "mail-loop"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bridge is when it sends mail.

    `message_id_domain` is the right-hand side of the Message-IDs it makes;
    `address` the From address of its digests. Empty means not configured:
    then only the `X-Bridge-Origin` header recognises own mail.
    """

    message_id_domain: str = ""
    address: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "message_id_domain", self.message_id_domain.strip().lower())
        object.__setattr__(self, "address", self.address.strip().lower())


def own_mail(parsed: ParsedMessage, identity: Identity) -> str | None:
    """Why this is mail the bridge sent itself (for people), or None.

    Mail a person wrote in Bridge (a reply from the viewer) is theirs, not
    the bridge's: its copies coming back are bridged like any other mail.
    """
    if any(_is_person_mail(value) for value in parsed.header_values(ORIGIN_HEADER)):
        return None
    domain = identity.message_id_domain
    if domain and parsed.message_id:
        right = parsed.message_id.rpartition("@")[2].lower()
        if right == domain:
            return f"Message-ID at {domain}"
    for value in parsed.header_values(ORIGIN_HEADER):
        origin = value.strip().lower()
        if origin and (not domain or origin == domain):
            return f"{ORIGIN_HEADER}: {origin}"
    if identity.address and parsed.sender and parsed.sender.address == identity.address:
        auto = (parsed.header("Auto-Submitted") or "").strip().lower()
        if auto and not auto.startswith("no"):
            # Auto-Submitted from our own address: a digest that came back
            # through a list or a forward with its headers stripped.
            return f"Auto-Submitted from {identity.address}"
    return (
        auto_reply_to_own_mail(parsed, identity)
        or unsubscribe_request(parsed, identity)
        or digest_reply(parsed, identity)
    )


def _is_person_mail(value: str) -> bool:
    _origin, _, kind = value.partition(";")
    return kind.strip().lower() == PERSON_MAIL


# Subjects of out-of-office and other automatic answers, for auto-replies that
# carry no RFC 3834 header (many Exchange and webmail vacation replies).
_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[ -]?(reply|response)|"
    r"réponse automatique|absence|abwesend|fuera de la oficina)",
    re.IGNORECASE,
)


def auto_reply_to_own_mail(parsed: ParsedMessage, identity: Identity) -> str | None:
    """Why this is an automatic answer to mail the bridge sent (a digest), or None.

    It names one of our Message-IDs in In-Reply-To or References, and is an
    auto-reply: flagged so by the parser (RFC 3834 headers) or with an
    out-of-office subject. A person's own reply to a digest is not dropped.
    """
    domain = identity.message_id_domain
    if not domain:
        return None
    ours = any(ref.rpartition("@")[2].lower() == domain for ref in parsed.in_reply_to)
    ours = ours or any(ref.rpartition("@")[2].lower() == domain for ref in parsed.references)
    if not ours:
        return None
    if Flag.AUTO_REPLY in parsed.flags or _AUTO_SUBJECT.search(parsed.subject or ""):
        return f"auto-reply to mail from {domain}"
    return None


def received_count(parsed: ParsedMessage) -> int:
    return sum(1 for key, _ in parsed.headers if key.lower() == "received")


def loop_check(parsed: ParsedMessage, max_received: int = MAX_RECEIVED) -> str | None:
    """The quarantine reason when this copy looks like a mail loop, else None."""
    return LOOP_REASON if received_count(parsed) > max_received else None


# The subject of the `mailto:` in a digest's List-Unsubscribe (RFC 2369).
UNSUBSCRIBE_SUBJECT = re.compile(r"^\s*unsubscribe(?:\s+(\S+))?\s*$", re.IGNORECASE)


def unsubscribe_request(parsed: ParsedMessage, identity: Identity) -> str | None:
    """Why this is a request, mailed to the bridge's address, to stop digests; or None.

    Such mail is for the bridge, not a discussion: it is kept, not bridged,
    and the digest job acts on the signed token in its subject.
    """
    if not identity.address or not UNSUBSCRIBE_SUBJECT.match(parsed.subject or ""):
        return None
    if any(a.address == identity.address for a in (*parsed.to, *parsed.cc)):
        return f"unsubscribe request to {identity.address}"
    return None


def digest_reply(parsed: ParsedMessage, identity: Identity) -> str | None:
    """Why this is a reply by mail to a digest (sent to a reply address), or None."""
    if not identity.address:
        return None
    if any(is_reply_address(a.address, identity.address) for a in (*parsed.to, *parsed.cc)):
        return f"reply by mail to a digest of {identity.address}"
    return None


# Precedence values of mail no person wrote to one correspondent (RFC 3834 2, 5.1).
_MACHINE_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")


def automatic(parsed: ParsedMessage) -> str | None:
    """Why this message was written by a machine, not a person, or None.

    A delivery status notification (RFC 3464), an RFC 3834 auto-reply
    (`Auto-Submitted` other than "no", `X-Autoreply`), `Precedence` bulk,
    junk or list, or an out-of-office subject.
    """
    if Flag.BOUNCE in parsed.flags:
        return "a bounce: a delivery status report"
    if Flag.AUTO_REPLY in parsed.flags:
        return "an automatic reply"
    precedence = (parsed.header("Precedence") or "").strip().lower()
    if precedence in _MACHINE_PRECEDENCE:
        return f"Precedence: {precedence}"
    if _AUTO_SUBJECT.search(parsed.subject or ""):
        return "an out-of-office subject"
    return None
