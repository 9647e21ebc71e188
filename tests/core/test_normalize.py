"""Pure helpers: ids, subjects, text cleaning, pipermail addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.normalize import (
    clean_text,
    decode_bytes,
    decode_encoded_words,
    deobfuscate_address,
    fold_whitespace,
    is_forward_subject,
    is_reply_subject,
    normalize_message_id,
    normalize_subject,
    parse_id_list,
    safe_filename,
)


def test_message_ids() -> None:
    assert normalize_message_id(" <Abc.123@Example.COM> ") == "Abc.123@Example.COM"
    assert normalize_message_id("(comment) <a@b> (x)") == "a@b"
    assert normalize_message_id("bare@id.org") == "bare@id.org"
    assert normalize_message_id("<a\n b@c>") == "ab@c"
    assert normalize_message_id("") is None
    assert normalize_message_id("<>") is None
    assert normalize_message_id("two words") is None


def test_id_lists_drop_junk_keep_order() -> None:
    junk = "<9704010826.AA00322@> (message from Martin Maechler on Tue, 1 Apr 97)"
    assert parse_id_list(junk) == ("9704010826.AA00322@",)
    assert parse_id_list("Kurt Hornik's message of Tue, 8 Apr 1997 20:03:01 +0200") == ()
    assert parse_id_list("<a@b> <c@d>\n <a@b> <> <e@f>") == ("a@b", "c@d", "e@f")
    assert parse_id_list("a@b c@d") == ("a@b", "c@d")


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Meeting", "meeting"),
        ("RE: RE: Re: Meeting", "meeting"),
        ("Re[2]: Meeting", "meeting"),
        ("AW: WG: Meeting", "meeting"),
        ("Antwort: Meeting", "meeting"),
        ("SV: VS: Meeting", "meeting"),
        ("TR: RE : Réunion", "réunion"),
        ("Réf. : x", "réf. : x"),
        ("RV: Enc: Odp: PD: YNT: Doorst: Antw: Meeting", "meeting"),
        ("[Rd] Re: [Rd] capture", "capture"),
        ("Fwd:   Big\n   news", "big news"),
        ("回复: 会议", "会议"),
        ("Regarding: x", "regarding: x"),
        ("Meeting (fwd)", "meeting"),
    ],
)
def test_normalize_subject(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


def test_reply_and_forward_subjects() -> None:
    assert is_reply_subject("[Rd] Re: x") and not is_forward_subject("[Rd] Re: x")
    assert is_forward_subject("WG: x") and not is_reply_subject("WG: x")
    assert not is_reply_subject("Report: x") and not is_forward_subject("Regarding x")


def test_clean_text() -> None:
    assert clean_text("a\r\nb\rc\x00d\x07e\tf\ud800") == "a\nb\ncde\tf\ufffd"


def test_fold_whitespace() -> None:
    assert fold_whitespace("  a\n\t b  ") == "a b"


def test_pipermail_at_form() -> None:
    value = "Kurt.Hornik at ci.tuwien.ac.at (Kurt Hornik)"
    assert deobfuscate_address(value) == "Kurt.Hornik@ci.tuwien.ac.at (Kurt Hornik)"
    assert deobfuscate_address("Alice <a@b.org>") == "Alice <a@b.org>"


@pytest.mark.parametrize(
    ("mangled", "address"),
    [
        ("murdoch@dunc@n @end|ng |rom gm@||@com (Duncan Murdoch)", "murdoch.duncan@gmail.com"),
        (
            "dm|tr|@pop@venko @end|ng |rom gm@||@com (Dmitri Popavenko)",
            "dmitri.popavenko@gmail.com",
        ),
        ("tom@@@k@||ber@ @end|ng |rom gm@||@com (Tomas Kalibera)", "tomas.kalibera@gmail.com"),
        ("m@ech|er @end|ng |rom @t@t@m@th@ethz@ch (Martin Maechler)", "maechler@stat.math.ethz.ch"),
        ("|uke-t|erney @end|ng |rom u|ow@@edu (Tierney, Luke)", "luke-tierney@uiowa.edu"),
    ],
)
def test_pipermail_mangled_form(mangled: str, address: str) -> None:
    assert deobfuscate_address(mangled).split(" ")[0] == address


def test_mangled_without_name_is_a_stable_valid_guess() -> None:
    first = deobfuscate_address("xy|@b @end|ng |rom ex@mp|e@org")
    assert first == deobfuscate_address("xy|@b @end|ng |rom ex@mp|e@org")
    local, _, domain = first.partition("@")
    assert local and "@" not in domain and domain.endswith(".org")


def test_encoded_words() -> None:
    assert decode_encoded_words("=?utf-8?q?J=C3=BCrgen?= <j@x>") == "Jürgen <j@x>"
    # A multi-byte character split over two words.
    assert decode_encoded_words("=?utf-8?q?=E2=82?= =?utf-8?q?=AC?=") == "€"
    assert decode_encoded_words("=?x-unknown?q?caf=E9?=") == "café"
    assert decode_encoded_words("=?utf-8?b?w6k?= broken =?utf-8?b?") == "é broken =?utf-8?b?"


def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes("café".encode(), None) == "café"
    assert decode_bytes("café".encode("cp1252"), "us-ascii") == "café"
    assert decode_bytes(b"\x81\x8d", None) == "\x81\x8d"  # latin-1 never fails
    assert decode_bytes(b"abc", "zlib") == "abc"  # not a text codec
    assert decode_bytes("Grüße".encode("utf-7"), "utf-7") == "Grüße"


def test_safe_filename() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\x\\report\u202egpj.exe") == "reportgpj.exe"
    assert safe_filename("a\x00b.txt") == "ab.txt"


@given(st.text())
def test_clean_text_output_is_always_clean(text: str) -> None:
    out = clean_text(text)
    assert "\r" not in out and "\x00" not in out
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in out)
    assert out.encode("utf-8").decode("utf-8") == out


@given(st.text(max_size=300))
def test_subject_helpers_never_fail(text: str) -> None:
    assert normalize_subject(normalize_subject(text)) == normalize_subject(text)
    assert isinstance(parse_id_list(text), tuple)
