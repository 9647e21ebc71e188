"""The one message builder: clean headers from hostile input, verified by a strict re-parse."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import pytest

from bridge.core.loops import ORIGIN_HEADER
from bridge.errors import AddressError
from bridge.outbound.compose import MAX_SUBJECT, compose, parse_address, verify

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
DOMAIN = "bridge.example.com"
CORE = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "auto-submitted",
    ORIGIN_HEADER.lower(),
    "mime-version",
    "content-type",
}


def build(**overrides: object) -> bytes:
    values: dict[str, object] = {
        "from_address": "bridge@example.com",
        "from_name": "Bridge",
        "to_address": "kam.keiser@enron.com",
        "to_name": "Kam Keiser",
        "subject": "Digest: 5 active discussions in Trading",
        "text": "Hello\n",
        "html": "<p>Hello</p>",
        "message_id_domain": DOMAIN,
        "now": NOW,
        "extra_headers": {},
    }
    values.update(overrides)
    return verify(compose(**values)[0])  # type: ignore[arg-type]


def strict(data: bytes):  # type: ignore[no-untyped-def]
    return BytesParser(policy=policy.strict).parsebytes(data)


def test_headers_and_parts() -> None:
    data = build(extra_headers={"Precedence": "bulk"})
    message = strict(data)
    assert {k.lower() for k in message} == CORE | {"precedence"}
    assert message["From"] == "Bridge <bridge@example.com>"
    assert message["To"] == "Kam Keiser <kam.keiser@enron.com>"
    assert message["Date"] == "Fri, 27 Nov 2026 07:00:00 +0000"
    assert message["Message-ID"].endswith(f"@{DOMAIN}>")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message[ORIGIN_HEADER] == DOMAIN
    assert message.get_content_type() == "multipart/alternative"
    types = [part.get_content_type() for part in message.iter_parts()]
    assert types == ["text/plain", "text/html"]
    assert data.isascii() and b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")


def test_every_message_gets_its_own_id() -> None:
    ids = {strict(build())["Message-ID"] for _ in range(50)}
    assert len(ids) == 50


HOSTILE = [
    "Kam\r\nBcc: victim@example.org",
    "Kam\nBcc: victim@example.org",
    "Kam\rBcc: victim@example.org",
    "Kam\x00\x1b[31m\x7f",
    "=?utf-8?q?Kam=0D=0ABcc=3A_victim=40example=2Eorg?=",
    "=?utf-8?b?S2FtDQpCY2M6IHZpY3RpbUBleGFtcGxlLm9yZw==?=",
    "=?x-no-such-charset?q?Kam=0D=0ABcc=3A_victim=40example=2Eorg?=",
    "Kam\u2028Bcc: victim@example.org",
    "Kam\u202e",  # a right-to-left override that would flip what readers see
]


@pytest.mark.parametrize("name", HOSTILE)
def test_control_characters_never_become_headers(name: str) -> None:
    data = build(to_name=name, from_name=name, subject=name, extra_headers={"X-Note": name})
    message = strict(data)
    assert {k.lower() for k in message} == CORE | {"x-note"}
    assert message.get_all("Bcc") is None
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc") for line in head.split(b"\r\n"))
    for value in (str(message["Subject"]), message["To"].addresses[0].display_name):
        assert not any(ord(c) < 32 or c in "\x7f\u2028\u202e" for c in value)


def test_non_ascii_is_encoded_and_reads_back() -> None:
    data = build(
        to_name="Émile Zoła, «the» <writer>",
        subject="Résumé : 3 discussions actives dans Ingénierie",
        text="Voilà les nouvelles\n",
    )
    assert data.isascii()
    message = strict(data)
    assert message["To"].addresses[0].display_name == "Émile Zoła, «the» <writer>"
    assert message["To"].addresses[0].addr_spec == "kam.keiser@enron.com"
    assert str(message["Subject"]) == "Résumé : 3 discussions actives dans Ingénierie"
    assert message.get_body(("plain",)).get_content().splitlines() == ["Voilà les nouvelles"]


def test_giant_subject_is_cut() -> None:
    message = strict(build(subject="Re: " * 5000 + "budget"))
    subject = str(message["Subject"])
    assert len(subject) == MAX_SUBJECT and subject.endswith("…")
    assert all(len(line) <= 998 for line in build(subject="x" * 20000).split(b"\r\n"))


def test_long_text_lines_travel_as_quoted_printable() -> None:
    line = "word " * 400
    message = strict(build(text=line + "\n"))
    plain = message.get_body(("plain",))
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"
    assert plain.get_content().rstrip("\r\n") == line


def test_list_unsubscribe_stays_readable_urls() -> None:
    url = "https://bridge.example.com/digest/unsubscribe?t=" + "a" * 150
    value = f"<{url}>, <mailto:bridge@example.com?subject=unsubscribe>"
    data = build(extra_headers={"List-Unsubscribe": value})
    assert f"List-Unsubscribe: <{url}>,\r\n <mailto:".encode() in data
    assert str(strict(data)["List-Unsubscribe"]) == value


@pytest.mark.parametrize(
    "address",
    [
        "",
        "no-at-sign",
        "kam@",
        "@enron.com",
        "kam keiser@enron.com",
        "kam@enron.com\r\nBcc: victim@example.org",
        "kam@en ron.com",
        "kam@-enron-.com",
        "kam@enron..com",
        "kàm@enron.com",
        "<kam@enron.com>",
        "kam@enron.com, victim@example.org",
    ],
)
def test_addresses_that_do_not_parse_are_refused(address: str) -> None:
    with pytest.raises(AddressError):
        build(to_address=address)
    with pytest.raises(AddressError):
        parse_address(address)


def test_international_domain_becomes_punycode() -> None:
    message = strict(build(to_address="anna@bücher.example"))
    assert message["To"].addresses[0].domain == "xn--bcher-kva.example"


@pytest.mark.parametrize("name", ["From", "message-id", "X-Bridge-Origin", "Bad Name", "A:B", ""])
def test_extra_headers_cannot_replace_the_builders_own(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be set"):
        build(extra_headers={name: "x"})


def test_a_bad_message_id_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="not a domain"):
        build(message_id_domain="bridge.example.com>\r\nBcc: x@y")
