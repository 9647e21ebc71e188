"""Loop and noise safety: own mail is skipped, loops are quarantined, bounces stay flagged.

The bridge has sent no mail yet, so its "own" messages are real messages
with their Message-ID or headers changed the way the bridge's own would be.
"""

from __future__ import annotations

import re
from pathlib import Path

from bridge.core.admin_rules.loops import (
    LOOP_REASON,
    MAX_RECEIVED,
    ORIGIN_HEADER,
    OWN_MAIL_RULE,
    Identity,
    loop_check,
    own_mail,
    received_count,
)
from bridge.core.admin_rules.rules import RuleSet, decide, trace
from bridge.core.mail.parse import parse_message
from bridge.core.message import Flag, ParsedMessage, Provenance, RuleDecision

DATA = Path(__file__).parent.parent / "data" / "rules"
FILE = Provenance("file", "tests/data/rules")
BRIDGE = Identity("bridge.example.com", "bridge@example.com")


def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


def parse(data: bytes) -> ParsedMessage:
    return parse_message(data)


def with_header(data: bytes, line: bytes) -> bytes:
    return line + b"\n" + data


def test_ordinary_mail_is_not_own_mail() -> None:
    for name in ("enron-socal-gas.eml", "fedora-devel-list.eml", "mailman-bounce.eml"):
        assert own_mail(parse(raw(name)), BRIDGE) is None
        assert own_mail(parse(raw(name)), Identity()) is None


def test_own_message_id_domain() -> None:
    data = raw("enron-socal-gas.eml").replace(
        b"<29759530.1075861861183.JavaMail.evans@thyme>",
        b"<digest.2024-05-01.42@Bridge.Example.com>",
    )
    parsed = parse(data)
    assert own_mail(parsed, BRIDGE) == "Message-ID at bridge.example.com"
    assert own_mail(parsed, Identity("other.example.com")) is None
    assert own_mail(parsed, Identity()) is None  # no domain configured: not checked


def test_origin_header_must_name_this_bridge() -> None:
    parsed = parse(with_header(raw("enron-socal-gas.eml"), b"X-Bridge-Origin: bridge.example.com"))
    assert own_mail(parsed, BRIDGE) == f"{ORIGIN_HEADER}: bridge.example.com"
    # Another company's bridge: its mail is ordinary mail to us.
    assert own_mail(parsed, Identity("bridge.other.org")) is None
    # No identity configured: any bridge marker is taken as own mail.
    assert own_mail(parsed, Identity()) is not None


def test_auto_submitted_from_the_bridge_address() -> None:
    data = raw("enron-socal-gas.eml").replace(
        b"From: bill.rapp@enron.com", b"From: Bridge <BRIDGE@example.com>"
    )
    assert own_mail(parse(data), BRIDGE) is None  # a person writing from it
    parsed = parse(with_header(data, b"Auto-Submitted: auto-generated"))
    assert own_mail(parsed, BRIDGE) == "Auto-Submitted from bridge@example.com"
    assert own_mail(parse(with_header(data, b"Auto-Submitted: no")), BRIDGE) is None


def test_decide_skips_own_mail_with_the_builtin_rule() -> None:
    parsed = parse(
        with_header(raw("fedora-devel-list.eml"), b"X-Bridge-Origin: bridge.example.com")
    )
    decision, failure = decide(RuleSet(identity=BRIDGE), parsed, FILE)
    assert failure is None
    assert decision == RuleDecision(skip=OWN_MAIL_RULE, hits=(OWN_MAIL_RULE,))


def looping(count: int) -> bytes:
    """The Fedora list message with its first Received header repeated to `count` in all."""
    data = raw("fedora-devel-list.eml")
    first = re.search(rb"^Received:.*\n(?:[ \t].*\n)*", data, re.MULTILINE)
    assert first is not None
    have = data.count(b"\nReceived:")
    return first.group(0) * (count - have) + data


def test_received_headers_are_counted() -> None:
    assert received_count(parse(raw("fedora-devel-list.eml"))) == 8
    assert received_count(parse(raw("enron-socal-gas.eml"))) == 0


def test_more_than_fifty_received_headers_is_a_loop() -> None:
    assert loop_check(parse(looping(MAX_RECEIVED))) is None
    assert loop_check(parse(looping(MAX_RECEIVED + 1))) == LOOP_REASON == "mail-loop"
    assert loop_check(parse(raw("fedora-devel-list.eml")), max_received=7) == "mail-loop"


def test_decide_quarantines_a_loop() -> None:
    decision, failure = decide(RuleSet(), parse(looping(51)), FILE)
    assert decision == RuleDecision()
    assert failure == ("mail-loop", "51 Received headers (more than 50)")
    result = trace(RuleSet(), parse(looping(51)), FILE)
    assert result.loop == "mail-loop" and result.decision == RuleDecision()


def test_bounces_and_auto_replies_are_stored_flagged_not_skipped() -> None:
    # Not discussion posts, but not dropped either: no rule, no skip; the flag travels on.
    for name, flag in (
        ("mailman-bounce.eml", Flag.BOUNCE),
        ("aol-mailbox-full-dsn.eml", Flag.BOUNCE),
        ("aol-mailbox-full-dsn.eml", Flag.AUTO_REPLY),
    ):
        parsed = parse(raw(name))
        assert flag in parsed.flags
        decision, failure = decide(RuleSet(identity=BRIDGE), parsed, FILE)
        assert failure is None and decision.skip is None


def test_a_persons_reply_written_in_bridge_is_theirs_not_own_mail() -> None:
    data = raw("enron-socal-gas.eml").replace(
        b"<29759530.1075861861183.JavaMail.evans@thyme>",
        b"<20261205100000.ab12cd34ef56ab78cd90@bridge.example.com>",
    )
    marked = with_header(data, b"X-Bridge-Origin: bridge.example.com; person")
    # Its id is at the bridge's domain, yet its copy coming back is bridged.
    assert own_mail(parse(marked), BRIDGE) is None
    assert own_mail(parse(marked), Identity()) is None
    # Without the mark, the same id is the bridge's own mail.
    assert own_mail(parse(data), BRIDGE) is not None
