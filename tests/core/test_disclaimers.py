"""Legal notices at the end of real messages are found; what people wrote never is."""

from __future__ import annotations

import time

import pytest

from bridge.core.body.disclaimers import is_notice, split_notice
from bridge.core.body.quotes import split_reply
from bridge.core.mail.parse import parse_message
from bridge.core.message import SplitText
from tests.conftest import DATA

MAIL = DATA / "viewer" / "mail"


def split(name: str) -> SplitText:
    return split_reply(parse_message((MAIL / name).read_bytes()).text)


@pytest.mark.parametrize(
    ("name", "kept_ends", "notice_starts", "notice_ends"),
    [
        (
            "elpaso-1-info.eml",
            "Cindy Franklin\nEl Paso Transportation Services\n832.676.3177",
            "*****",
            "sender.\n******************************************************************",
        ),
        (
            "bnp-marketwatch.eml",
            "(See attached file: ng062602.pdf)",
            'This message and any attachments (the "message") is',
            "dans l'hypothese ou il aurait ete modifie.",
        ),
        (
            "attorney-client.eml",
            "Terri Richardson\nAssistant to J.C. Nickens",
            "This e-mail and any attached files may be confidential",
            "(713)654-7600.",
        ),
        (
            "french-notice.eml",
            "Claire Massé\nGestion de portefeuille – Énergies du Rhône\n04 72 00 00 00",
            "Ce message et toutes les pièces jointes",
            "dans l'hypothèse où il aurait été modifié.",
        ),
    ],
)
def test_the_notice_closing_the_new_text_is_found(
    name: str, kept_ends: str, notice_starts: str, notice_ends: str
) -> None:
    folded = split_notice(split(name).new_text)
    assert folded.text.endswith(kept_ends)
    assert folded.notice.startswith(notice_starts)
    assert folded.notice.endswith(notice_ends)


def test_a_notice_under_a_signature_is_found_in_german_and_english() -> None:
    parts = split("german-notice.eml")
    assert split_notice(parts.new_text).notice == ""
    folded = split_notice(parts.signature)
    assert folded.text.startswith("--\nJürgen Weiß") and folded.text.endswith("+49 341 555 2710")
    assert folded.notice.startswith("Diese E-Mail enthält vertrauliche")
    assert folded.notice.endswith("is strictly forbidden.")


@pytest.mark.parametrize("name", ["confidentiality-reminder.eml", "solicitation-calls.eml"])
def test_what_people_write_about_confidentiality_is_never_folded(name: str) -> None:
    parts = split(name)
    assert "confidential" in parts.new_text
    folded = split_notice(parts.new_text)
    assert folded.notice == "" and folded.text == parts.new_text


@pytest.mark.parametrize(
    "text",
    [
        # A sentence a person writes: it names the message and its confidentiality, but short.
        "Numbers below.\n\nThis message is confidential: please don't forward it to anyone"
        " who isn't an intended recipient.\n\nThanks,\nBob",
        # Legal words the person answers with, then more of their own text.
        "About the NDA: this e-mail and any attachments you send must stay confidential,"
        " and in error cases we notify the sender and delete the copies; any unauthorised"
        " distribution is prohibited by clause 4.\n\n" + "More of my reply goes on here.\n" * 5,
        # Nothing but a notice: a whole text is never folded.
        "This email and any files transmitted with it are confidential and intended solely"
        " for the use of the individual or entity to whom they are addressed. If you have"
        " received this email in error please notify the system manager.",
        "",
    ],
)
def test_no_fold_when_the_person_wrote_it(text: str) -> None:
    assert split_notice(text).notice == ""
    assert split_notice(text).text == text


def test_a_notice_glued_to_a_signature_leaves_the_signature() -> None:
    text = (
        "See you at the hearing.\n\n"
        "Lawrence Hand\nLemle & Kelleher, L.L.P.\n601 Poydras Street, Suite 2100\n"
        "The information contained in this transmission is attorney privileged and"
        " confidential. It is intended only for the use of the individual or entity named"
        " above. If the reader of this message is not the intended recipient, you are hereby"
        " notified that any dissemination, distribution or copying of this communication is"
        " strictly prohibited."
    )
    folded = split_notice(text)
    assert folded.text.endswith("601 Poydras Street, Suite 2100")
    assert folded.notice.startswith("The information contained in this transmission")


def test_a_title_above_a_notice_goes_with_it() -> None:
    notice = (
        "This e-mail and any attachments are confidential and may be privileged. If you are"
        " not the intended recipient, please notify the sender and delete it; any use or"
        " disclosure is prohibited."
    )
    for title in ("CONFIDENTIALITY NOTICE", "Disclaimer:", "LEGAL STUFF"):
        folded = split_notice(f"Hi all, numbers attached.\n\n{title}\n{notice}")
        assert folded.text == "Hi all, numbers attached."
        assert folded.notice.startswith(title)
    # A job title is not a notice's title.
    folded = split_notice(f"Thanks.\n\nMark Powell\nLegal Counsel\n{notice}")
    assert folded.text.endswith("Legal Counsel")


def test_is_notice_needs_the_message_and_two_kinds_of_legal_words() -> None:
    assert not is_notice("Confidential. " * 20)
    assert not is_notice("This e-mail " + "is confidential. " * 12)
    assert is_notice(
        "Diese E-Mail enthält vertrauliche und/oder rechtlich geschützte Informationen. Wenn"
        " Sie nicht der richtige Adressat sind, informieren Sie bitte sofort den Absender."
    )


def test_linear_on_hostile_text() -> None:
    notice = "This e-mail is confidential; if received in error notify the sender. " * 3
    hostile = ("a\n" * 50_000) + ("this message confidential in error " * 20_000) + "\n\n" + notice
    start = time.perf_counter()
    split_notice(hostile)
    split_notice("\n\n".join(["This e-mail is confidential in error"] * 20_000))
    assert time.perf_counter() - start < 2.0
