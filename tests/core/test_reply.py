"""The headers of a reply written in Bridge: subject, threading ids, recipients, quote.

The parents are real messages of the test corpus (Enron reply-all chains and
R-devel list mail) where a real header is the input; the expected values are
what Outlook, Thunderbird and Gmail put in a reply to them.
"""

from __future__ import annotations

import pytest

from bridge.core.mail.parse import parse_message
from bridge.core.message import Address
from bridge.core.outgoing.reply import (
    MAX_REFERENCES,
    MAX_REFERENCES_CHARS,
    quoted,
    reply_recipients,
    reply_references,
    reply_subject,
)
from tests.conftest import DATA


@pytest.mark.parametrize(
    ("parent", "reply"),
    [
        ("Budget", "Re: Budget"),
        ("Re: Budget", "Re: Budget"),
        ("RE: AW: TR: Budget", "Re: Budget"),
        ("Réf. : x", "Re: Réf. : x"),
        ("RE : Réunion de lundi", "Re: Réunion de lundi"),
        ("AW: WG: Rechnung März", "Re: Rechnung März"),
        ("Re[2]: SV: Fwd: plan", "Re: plan"),
        ("[Sales] Re: Q3 numbers", "Re: [Sales] Q3 numbers"),
        ("Re: [R] Re: [R] plot margins", "Re: [R] plot margins"),
        ("  Re:   spaced\tout  ", "Re: spaced out"),
        ("", "Re:"),
        ("Re:", "Re:"),
        ("Return of the jedi", "Re: Return of the jedi"),
    ],
)
def test_reply_subject_does_not_stack_prefixes(parent: str, reply: str) -> None:
    assert reply_subject(parent) == reply


def test_references_follow_the_parents_chain_and_end_with_the_parent() -> None:
    data = (DATA / "threads" / "notmuch" / "lkml").glob("*")
    parents = [parse_message(p.read_bytes()) for p in sorted(data) if p.is_file()]
    chained = [p for p in parents if p.references]
    assert chained, "the corpus has replies with References"
    for parent in chained:
        in_reply_to, refs = reply_references(
            parent.message_id, parent.references, parent.in_reply_to
        )
        assert in_reply_to == f"<{parent.message_id}>" == refs[-1]
        assert refs[:-1] == tuple(f"<{r}>" for r in parent.references if r != parent.message_id)


def test_references_fall_back_on_in_reply_to_and_skip_what_is_not_an_id() -> None:
    assert reply_references("b@x", (), ("a@x", "z@x")) == ("<b@x>", ("<a@x>", "<b@x>"))
    assert reply_references("<b@x>", ("a@x", "not an id", "<a@x>"))[1] == ("<a@x>", "<b@x>")
    with pytest.raises(ValueError, match="not an id"):
        reply_references("two words")


def test_a_long_chain_keeps_its_root_and_newest_ids() -> None:
    chain = [f"<{n:03d}.{'x' * 60}@example.com>" for n in range(200)]
    _, refs = reply_references("<parent@example.com>", chain)
    assert refs[0] == chain[0] and refs[-1] == "<parent@example.com>"
    assert refs[-2] == chain[-1] and refs[1:-1] == tuple(chain[-(len(refs) - 2) :])
    assert len(refs) <= MAX_REFERENCES and len(" ".join(refs)) <= MAX_REFERENCES_CHARS


def addresses(*items: str) -> tuple[Address, ...]:
    return tuple(Address(name=i.split("@")[0].title(), address=i) for i in items)


def corpus_parent() -> tuple[tuple[Address, ...], tuple[Address, ...], Address]:
    folders = (DATA / "enron" / "maildir", DATA / "threads" / "notmuch" / "lkml")
    found = sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())
    for path in found:
        parent = parse_message(path.read_bytes())
        if len(parent.to) >= 2 and parent.cc and parent.sender is not None:
            return parent.to, parent.cc, parent.sender
    raise AssertionError("no message with two in To and some in Cc in the corpus")


def test_reply_all_to_a_real_message_with_to_and_cc() -> None:
    to, cc, sender = corpus_parent()
    replier = to[0].address
    got = reply_recipients(
        "all",
        replier.upper(),
        sender=(sender,),
        to=to,
        cc=cc,
        own_addresses=["bridge@corp.example"],
    )
    assert got.to[0].address == sender.address
    expected_to = [sender.address] + [a.address for a in to if a.address not in (replier,)]
    assert [a.address for a in got.to] == list(dict.fromkeys(expected_to))
    expected_cc = [a.address for a in cc if a.address not in expected_to and a.address != replier]
    assert [a.address for a in got.cc] == list(dict.fromkeys(expected_cc))
    assert replier not in [a.address for a in got.everyone]
    assert len({a.address for a in got.everyone}) == len(got.everyone)


def test_reply_all_leaves_out_the_replier_the_bridge_and_its_sub_addresses() -> None:
    got = reply_recipients(
        "all",
        "bob@corp.example",
        sender=addresses("alice@corp.example"),
        reply_to=addresses("team@corp.example"),
        to=addresses("Bob@Corp.Example", "bridge+r.abc@corp.example", "carol@corp.example"),
        cc=addresses("bridge@corp.example", "carol@corp.example", "dave@partner.example"),
        own_addresses=["bridge@corp.example"],
    )
    assert [a.address for a in got.to] == ["team@corp.example", "carol@corp.example"]
    assert [a.address for a in got.cc] == ["dave@partner.example"]


def test_reply_to_sender_and_to_ones_own_message() -> None:
    sender = addresses("alice@corp.example")
    to = addresses("bob@corp.example", "carol@corp.example")
    got = reply_recipients("sender", "bob@corp.example", sender=sender, to=to)
    assert [a.address for a in got.everyone] == ["alice@corp.example"]
    mine = reply_recipients("sender", "alice@corp.example", sender=sender, to=to)
    assert [a.address for a in mine.to] == ["bob@corp.example", "carol@corp.example"]
    # Reply all to a message the replier got alone, in To: the others in Cc take To.
    alone = reply_recipients(
        "all", "bob@corp.example", sender=addresses("bob@corp.example"),
        to=addresses("bob@corp.example"), cc=addresses("erin@corp.example"),
    )  # fmt: skip
    assert [a.address for a in alone.to] == ["erin@corp.example"] and alone.cc == ()


def test_quoting_marks_each_line_once_more() -> None:
    text = "Yes, Thursday.\r\n\r\n> Can we meet?\n>> Earlier\n"
    assert quoted(text) == "> Yes, Thursday.\n>\n>> Can we meet?\n>>> Earlier"
