"""Digest reply tokens and addresses (pure): packing, signature, expiry, person, case."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta

import pytest

from bridge.core.admin_rules.loops import Identity, automatic, own_mail
from bridge.core.mail.parse import parse_message
from bridge.core.message import ParsedMessage
from bridge.core.outgoing.reply_address import (
    MAX_LOCAL_PART,
    TOKEN_LENGTH,
    Mac,
    Refusal,
    ReplyToken,
    make_token,
    read_token,
    reply_address,
    token_in,
)

TODAY = date(2026, 12, 1)
ALICE = "alice@example.com"


def mac_of(key: bytes) -> Mac:
    return lambda data: hmac.new(key, data, hashlib.sha256).digest()


MAC = mac_of(b"k" * 32)


def test_a_token_round_trips_and_is_short_lower_case_base32() -> None:
    token = make_token(MAC, 123_456_789, "Alice@Example.com", TODAY + timedelta(days=30))
    assert len(token) == TOKEN_LENGTH and token == token.lower() and token.isalnum()
    found = read_token(MAC, token, TODAY)
    assert isinstance(found, ReplyToken)
    assert found.message_pk == 123_456_789 and found.expires == TODAY + timedelta(days=30)
    assert found.belongs_to(ALICE, MAC) and found.belongs_to(" ALICE@example.COM", MAC)
    assert not found.belongs_to("bob@example.com", MAC)
    # MTAs that fold local parts to upper case do not break it.
    assert isinstance(read_token(MAC, token.upper(), TODAY), ReplyToken)


def test_largest_pk_fits_and_the_address_stays_inside_64() -> None:
    token = make_token(MAC, 2**40 - 1, ALICE, date(2149, 1, 1))
    address = reply_address("Bridge@Example.com", token)
    assert address is not None and address.startswith("bridge+r.")
    assert len(address.partition("@")[0]) == 9 + TOKEN_LENGTH <= MAX_LOCAL_PART
    with pytest.raises(ValueError):
        make_token(MAC, 2**40, ALICE, TODAY)
    long_local = "x" * 30 + "@example.com"
    assert reply_address(long_local, token) is None, "never a local part over 64"


@pytest.mark.parametrize("position", [0, 5, 12, 20, 31])
def test_any_changed_letter_is_refused(position: int) -> None:
    token = make_token(MAC, 42, ALICE, TODAY)
    letter = "b" if token[position] != "b" else "c"
    changed = token[:position] + letter + token[position + 1 :]
    found = read_token(MAC, changed, TODAY)
    assert isinstance(found, Refusal) and "not one Bridge made" in found.reason


def test_other_keys_lengths_and_alphabets_are_refused() -> None:
    token = make_token(MAC, 42, ALICE, TODAY)
    assert isinstance(read_token(mac_of(b"other" * 8), token, TODAY), Refusal)
    assert isinstance(read_token(MAC, token[:-1], TODAY), Refusal)
    assert isinstance(read_token(MAC, token[:-1] + "1", TODAY), Refusal)  # not base32
    assert isinstance(read_token(MAC, "", TODAY), Refusal)


def test_expiry_is_the_last_valid_day() -> None:
    token = make_token(MAC, 42, ALICE, TODAY)
    assert isinstance(read_token(MAC, token, TODAY), ReplyToken)
    late = read_token(MAC, token, TODAY + timedelta(days=1))
    assert isinstance(late, Refusal) and "expired on 2026-12-01" in late.reason


def test_reply_addresses_are_recognised_only_at_the_bridge_address() -> None:
    base = "bridge@example.com"
    assert token_in("Bridge+R.ABC@EXAMPLE.com", base) == "abc"
    assert token_in("bridge+r.abc@other.example", base) is None
    assert token_in("bridge+x.abc@example.com", base) is None
    assert token_in("bridge@example.com", base) is None
    assert token_in("alice+r.abc@example.com", base) is None
    assert token_in("bridge+r.abc@example.com", "") is None


def test_machine_mail_and_copies_of_mailed_replies() -> None:
    def parsed(headers: str) -> ParsedMessage:
        return parse_message(
            (
                f"From: alice@example.com\r\nTo: bridge+r.abc@example.com\r\n{headers}"
                "Subject: Re: Digest\r\nMessage-ID: <m@example.com>\r\n\r\nHello\r\n"
            ).encode()
        )

    plain = parsed("")
    assert automatic(plain) is None
    assert automatic(parsed("Auto-Submitted: auto-replied\r\n")) == "an automatic reply"
    assert automatic(parsed("Precedence: list\r\n")) == "Precedence: list"
    identity = Identity("bridge.example.com", "bridge@example.com")
    why = own_mail(plain, identity)
    assert why == "reply by mail to a digest of bridge@example.com"
    assert own_mail(plain, Identity("bridge.example.com", "")) is None
