"""The "reply by email" link of each digest thread: a real digest run over Enron mail,
on SQLite and PostgreSQL.

Each thread of a digest has a mailto link, in the text and the HTML, to a
reply address of the bridge's own: a valid RFC 5321 address whose local part
fits in 64 characters, whose token names the reader and the newest message
of the thread they may see and did not write.
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from email import policy
from email.headerregistry import Address
from email.parser import BytesParser
from urllib.parse import parse_qs, unquote

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.core.access import viewer_for
from bridge.core.outgoing.reply_address import MAX_LOCAL_PART, ReplyToken, read_token, token_in
from bridge.outbound.compose import parse_address
from bridge.outbound.digest_run import run
from bridge.outbound.keys import signing_key
from bridge.signing import DIGEST_REPLY, Signer
from bridge.store.read.browse import original_bytes
from bridge.store.tables import Outbox, User
from tests.outbound.test_digests import CONFIG, HEADS_RUN, load, store  # noqa: F401

KAM = "kam.keiser@enron.com"
# RFC 5321 4.1.2 Dot-string: atoms of atext joined by single dots.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
RFC5321_DOT_ATOM = re.compile(rf"{ATEXT}(\.{ATEXT})*")
MAILTO = re.compile(r"mailto:([^\s\"'<>?]+)(\?[^\s\"'<>]*)?")


def digest(engine: Engine) -> tuple[str, str]:
    """(text, html) of the one digest in the outbox."""
    with Session(engine) as session:
        data = session.execute(select(Outbox.data)).scalar_one()
    message = BytesParser(policy=policy.strict).parsebytes(data)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return text, html


def test_every_thread_has_a_reply_link_to_a_valid_short_address(
    store: Engine,  # noqa: F811
) -> None:
    config = load()
    run(store, config, HEADS_RUN, only=KAM)
    text, html = digest(store)
    in_text = [m.group(1) for m in MAILTO.finditer(text)]
    in_html = [m for m in MAILTO.finditer(html.replace("&amp;", "&"))]
    assert in_text and "Reply by email:" in text and "Reply by email</a>" in html
    assert [m.group(1) for m in in_html] == in_text, "the same addresses in both parts"
    query = parse_qs((in_html[0].group(2) or "?")[1:])
    assert query["subject"][0].startswith("Re: ")
    with Session(store) as session, session.begin():
        signer = Signer(signing_key(session, config, HEADS_RUN))
    viewer = viewer_for(KAM, config.spaces, config.staff_domains)
    for address in in_text:
        address = unquote(address)
        local, _, domain = address.partition("@")
        assert len(local) <= MAX_LOCAL_PART and domain == "example.com"
        assert parse_address(address) == (local, domain)
        assert RFC5321_DOT_ATOM.fullmatch(local), local
        assert Address(addr_spec=address).username == local  # parses under RFC 5322
        assert local.startswith("bridge+r.") and local == local.lower()
        token = token_in(address, config.bridge.address)
        assert token is not None
        found = read_token(lambda d: signer.mac(DIGEST_REPLY, d), token, HEADS_RUN.date())
        assert isinstance(found, ReplyToken)
        assert found.belongs_to(KAM, lambda d: signer.mac(DIGEST_REPLY, d))
        assert not found.belongs_to("pallen@enron.com", lambda d: signer.mac(DIGEST_REPLY, d))
        assert found.expires == HEADS_RUN.date() + timedelta(days=30)
        with Session(store) as session:
            assert original_bytes(session, viewer, found.message_pk) is not None, (
                "the message answered is one the reader may see"
            )


def test_french_link_text(store: Engine) -> None:  # noqa: F811
    with Session(store) as session, session.begin():
        session.add(User(address=KAM, language="fr", created_at=HEADS_RUN))
    run(store, load(), HEADS_RUN, only=KAM)
    text, html = digest(store)
    assert "Répondre par courriel :" in text and "Répondre par courriel</a>" in html


def test_no_links_when_turned_off(store: Engine) -> None:  # noqa: F811
    off = parse_config(
        tomllib.loads(CONFIG.replace("[digest]\n", "[digest]\nreply_days = 0\n")), "bridge.toml"
    )
    assert off.digest.reply_days == 0
    run(store, off, HEADS_RUN, only=KAM)
    text, html = digest(store)
    assert "mailto:bridge+r." not in text and "bridge+r." not in html
