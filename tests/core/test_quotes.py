"""Tests of `bridge.core.body.quotes.split_reply` on real reply bodies.

Each `tests/data/quotes/<name>.txt` is one body; `<name>.expected.txt` is
the new text a reader would say its author wrote (see SOURCE.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.body.quotes import split_reply

CASES = Path(__file__).resolve().parent.parent / "data" / "quotes"
NAMES = sorted(p.name.removesuffix(".expected.txt") for p in CASES.glob("*.expected.txt"))


def squash(text: str) -> str:
    return " ".join(text.split())


def body(name: str) -> str:
    return (CASES / f"{name}.txt").read_text(encoding="utf-8")


def test_case_set_is_large_enough() -> None:
    assert len(NAMES) >= 80
    assert all((CASES / f"{name}.txt").exists() for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_new_text(name: str) -> None:
    expected = (CASES / f"{name}.expected.txt").read_text(encoding="utf-8")
    assert squash(split_reply(body(name)).new_text) == squash(expected)


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_lost(name: str) -> None:
    text = body(name)
    result = split_reply(text)
    kept = "\n".join((result.new_text, result.quoted_text, result.signature))
    assert sorted(squash(kept).split()) == sorted(squash(text).split())


def test_quoted_text_keeps_the_attribution() -> None:
    result = split_reply(body("fr_le_a_ecrit_wrapped"))
    assert result.quoted_text.startswith("Le lun. 15 nov. 2021 à 19:42, John - Acme")
    assert "a écrit :" in result.quoted_text.splitlines()[1]


def test_outlook_block_goes_to_quoted_text() -> None:
    result = split_reply(body("de_urspruengliche_nachricht"))
    assert result.quoted_text.startswith("-----Ursprüngliche Nachricht-----")
    assert "Betreff: Ihre Anfrage" in result.quoted_text
    assert result.signature == ""


def test_lotus_notes_sender_lines_are_quoted() -> None:
    result = split_reply(body("enron_lotus_3"))
    assert result.quoted_text.startswith("Jess Hewitt\n06/05/2001 10:39 AM")
    assert result.new_text.endswith("Tom")


def test_forwarded_by_goes_to_quoted_text() -> None:
    result = split_reply(body("enron_fwd_8"))
    assert result.quoted_text.startswith("---------------------- Forwarded by Grant Oh")
    assert result.new_text.endswith("here we are bruce....")


def test_dash_dash_space_signature() -> None:
    result = split_reply(body("rdevel_2"))
    assert result.signature.startswith("--")
    assert "Brian D. Ripley" in result.signature
    assert "Brian D. Ripley" not in result.new_text


def test_signature_after_interleaved_reply() -> None:
    result = split_reply(body("en_inline_with_sig"))
    assert result.signature == "--\nSam Taylor\nRelease Manager"
    assert [line for line in result.quoted_text.splitlines() if line.startswith(">")] == [
        "> Can we ship on Friday?",
        "> And the release notes?",
    ]


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("mobile_blackberry", "Sent from my BlackBerry"),
        ("de_apple_schrieb_iphone", "Von meinem iPhone gesendet"),
        ("es_iphone_enviado_desde", "Enviado desde mi iPhone"),
        ("pt_iphone_enviado_do_meu", "Enviado do meu iPhone"),
        ("no_iphone_sendt_fra", "Sendt fra min iPhone"),
        ("fr_message_transfere_iphone", "Envoyé de mon iPhone"),
        ("it_outlook_da_inviato_iphone", "Inviato da iPhone"),
        ("mobile_outlook_ios", "Get Outlook for iOS<https://aka.ms/o0ukef>"),
    ],
)
def test_mobile_signatures(name: str, line: str) -> None:
    result = split_reply(body(name))
    assert result.signature == line
    assert line not in result.new_text


def test_mobile_outlook_puts_unmarked_quote_below_its_line() -> None:
    result = split_reply(body("de_outlook_android"))
    assert result.signature.startswith("Gesendet von Outlook für Android")
    assert result.quoted_text == "Hi there!"


@pytest.mark.parametrize(
    "name", ["en_regards_no_sig", "tricky_8", "mobile_not_signature", "en_not_a_signature_dashes"]
)
def test_closings_are_not_signatures(name: str) -> None:
    result = split_reply(body(name))
    assert result.signature == ""
    assert result.quoted_text == ""


def test_mailman_footer_is_not_new_text() -> None:
    result = split_reply(body("en_list_inline_riak"))
    assert "mailing list" in result.signature
    assert "mailing list" not in result.new_text


def test_plain_text_is_all_new() -> None:
    text = "Hello,\n\nthe build is green again.\n\nThanks,\nHeather\n"
    assert split_reply(text) == split_reply(text)
    result = split_reply(text)
    assert result.new_text == "Hello,\n\nthe build is green again.\n\nThanks,\nHeather"
    assert (result.quoted_text, result.signature) == ("", "")


def test_empty_body() -> None:
    result = split_reply("")
    assert (result.new_text, result.quoted_text, result.signature) == ("", "", "")


@pytest.mark.slow
def test_pathological_large_bodies_split_without_loss() -> None:
    quoted = "> " + "word " * 20 + "\n"
    cases = [
        "x" * 5_000_000,
        ("On Mon, Jan 1, 2024 at 10:00 AM " + "a" * 300 + "\n") * 10_000,
        "From: a\n" * 100_000,
        "Reply.\n\nOn Mon, 1 Jan 2024, A <a@b.c> wrote:\n" + quoted * 100_000,
        ("-" * 3000 + " message " + "-" * 3000 + "x\n") * 500,
        ("text wrote " * 40 + "\n") * 20_000,
        ("-- x " + "-" * 150 + " y\n") * 100_000,
        ("12:34 " * 60 + "@@@ a@b.c" * 5 + ":\n") * 50_000,
        ("Sent from my " + "phone " * 30 + "!\n") * 100_000,
        "--\n" * 100_000,
        ("On 1 " + "wrote " * 60 + ":\n") * 50_000,
    ]
    for text in cases:
        result = split_reply(text)
        kept = " ".join((result.new_text, result.quoted_text, result.signature))
        assert kept.split() == text.split()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("> -_:\nOnwrote@1From")), max_size=400))
def test_any_text_splits_without_loss(text: str) -> None:
    result = split_reply(text)
    kept = " ".join((result.new_text, result.quoted_text, result.signature))
    assert sorted(kept.split()) == sorted(text.split())
