"""The one message builder: clean headers from hostile input, verified by a strict re-parse."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import pytest

from bridge.core.admin_rules.loops import ORIGIN_HEADER
from bridge.errors import AddressError
from bridge.outbound.compose import (
    MAX_SUBJECT,
    Attachment,
    compose,
    compose_personal,
    flowed,
    parse_address,
    verify,
)

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


def personal(**overrides: object) -> bytes:
    values: dict[str, object] = {
        "from_address": "bridge@example.com",
        "from_name": "Kam Keiser via Bridge",
        "reply_to": [("kam.keiser@enron.com", "Kam Keiser")],
        "to": [("phillip.love@enron.com", "Phillip Love"), ("darron.giron@enron.com", "")],
        "cc": [("errol.mclaughlin@enron.com", "McLaughlin Jr., Errol")],
        "subject": "Re: Heads up",
        "text": "Thanks, noted.\n\nOn 30 Jan 2002, Phillip wrote:\n> The curve moves today.\n",
        "in_reply_to": "<24818672.1075841079436.JavaMail.evans@thyme>",
        "references": [
            "<root.1@thyme>",
            "<24818672.1075841079436.JavaMail.evans@thyme>",
        ],
        "message_id_domain": DOMAIN,
        "now": NOW,
    }
    values.update(overrides)
    return compose_personal(**values)[1]  # type: ignore[arg-type]


def test_a_reply_carries_threading_headers_and_is_not_automatic() -> None:
    message = strict(personal())
    assert message["In-Reply-To"] == "<24818672.1075841079436.JavaMail.evans@thyme>"
    assert message["References"].split() == [
        "<root.1@thyme>",
        "<24818672.1075841079436.JavaMail.evans@thyme>",
    ]
    assert message["Reply-To"] == "Kam Keiser <kam.keiser@enron.com>"
    assert [a.addr_spec for a in message["To"].addresses] == [
        "phillip.love@enron.com",
        "darron.giron@enron.com",
    ]
    assert message["Cc"].addresses[0].display_name == "McLaughlin Jr., Errol"
    assert message["Auto-Submitted"] is None
    assert message[ORIGIN_HEADER] == f"{DOMAIN}; person"
    assert message.get_content_type() == "text/plain"
    assert message.get_param("format") == "flowed"


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_and_subjects_never_become_headers_in_a_reply(name: str) -> None:
    data = personal(
        from_name=name,
        reply_to=[("kam.keiser@enron.com", name)],
        to=[("phillip.love@enron.com", name)],
        subject=name,
        text=f"{name}\r\nBcc: victim@example.org\n",
    )
    message = strict(data)
    assert message.get_all("Bcc") is None
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc") for line in head.split(b"\r\n"))
    for value in (str(message["Subject"]), message["To"].addresses[0].display_name):
        assert not any(ord(c) < 32 or c in "\x7f\u2028\u202e" for c in value)


def test_threading_ids_are_checked() -> None:
    for bad in ("no-brackets@x", "<a b@x>", "<x@y>\r\nBcc: v@example.org"):
        with pytest.raises(ValueError):
            personal(in_reply_to=bad)
        with pytest.raises(ValueError):
            personal(references=[bad])


def test_attachments_go_with_a_safe_name_and_type() -> None:
    pdf = Attachment("contrat\r\nBcc: x@y.org.pdf", "multipart/mixed", b"%PDF-1.4 data")
    message = strict(personal(attachments=[pdf]))
    [part] = list(message.iter_attachments())
    assert part.get_content_type() == "application/octet-stream"
    assert "\r" not in part.get_filename() and "\n" not in part.get_filename()
    assert part.get_content() == b"%PDF-1.4 data"


def test_flowed_text_wraps_long_lines_and_reads_back_whole() -> None:
    paragraph = "Le contrat de transport doit être revu " * 8
    body = flowed(paragraph.strip() + "\nFrom now on\n> quoted " + "word " * 30 + "\n-- \nKam")
    lines = body.split("\n")
    assert all(len(line) <= 78 for line in lines)
    assert " From now on" in lines, "a line starting with From is space-stuffed"
    assert "-- " in lines, "the signature separator stays"
    # Unflowing (RFC 3676 4.2): a line ending in a space joins the next.
    joined, current = [], ""
    for line in lines:
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content
        if line != "-- " and content.endswith(" "):
            current += content
            continue
        joined.append(">" * depth + current + content)
        current = ""
    assert joined[0] == paragraph.strip()
    assert joined[1] == "From now on"
    assert joined[2] == ">" + ("quoted " + "word " * 30).strip()


def test_half_a_surrogate_pair_from_json_goes_out_as_a_replacement_character() -> None:
    message = strict(personal(text="Prix \ud965 net\n", subject="Re: \udc30 Budget"))
    assert "\ufffd" in message.get_content() and "\ufffd" in str(message["Subject"])
