"""What a reader sees in the details: their time zone, space names, senders' names, legal
notices folded, tables kept, over real imported mail (issue 11, items 10, 11, 13, 15)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.store.tables import Message, Person, Thread
from bridge.web.frame.context import browser_zone
from tests.conftest import DATA
from tests.web.support import CONFIG, ENRON, LKML, imported, sign_in, thread_id, viewer_app

Client = TestClient[web.Request, web.Application]
ClientMaker = Callable[[web.Application], Awaitable[Client]]


VIEWER_MAIL = DATA / "viewer" / "mail"
READER = "judy.townsend@enron.com"  # staff: reads the "all-staff" space
# The messages of tests/data/viewer/ go to a space open to staff, named "All staff".
VIEWER_CONFIG = (
    CONFIG
    + """
[[spaces]]
slug = "all-staff"
name = "All staff"
visibility = "staff"

[[rules]]
name = "viewer-details"
space = "all-staff"
[rules.match]
from = ["@elpaso.com", "@americas.bnpparibas.com", "richardson@copn.com",
        "announcements.enron@enron.com", "chairman.office@enron.com",
        "@stadtwerke-lindenau.de", "@energies-rhone.fr", "@fanox.com"]
"""
)


@pytest.fixture
async def site(sqlite_engine: Engine, aiohttp_client: ClientMaker) -> tuple[Client, Engine]:
    config = imported(sqlite_engine, [ENRON, LKML, VIEWER_MAIL], VIEWER_CONFIG)
    app = viewer_app(sqlite_engine, config)
    return await aiohttp_client(app), sqlite_engine


async def page(client: Client, path: str, who: str, cookies: str = "") -> str:
    headers = sign_in(client.app, who)
    if cookies:
        headers["Cookie"] += "; " + cookies
    response = await client.get(path, headers=headers, allow_redirects=False)
    assert response.status == 200, path
    return await response.text()


# --- 10. the browser's time zone ---------------------------------------------------------


def test_the_zone_cookie_is_decoded_and_checked_against_the_zone_database() -> None:
    # app.js writes encodeURIComponent(zone).
    assert browser_zone("America%2FChicago") == "America/Chicago"
    assert browser_zone("America/Argentina/Buenos_Aires") == "America/Argentina/Buenos_Aires"
    assert browser_zone("UTC") == "UTC"
    for bad in ("", "Mars%2FOlympus", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Flocaltime", "localtime"):
        assert browser_zone(bad) is None, bad


async def test_dates_follow_the_zone_the_browser_wrote(site: tuple[Client, Engine]) -> None:
    client, engine = site
    heads = thread_id(engine, "Heads up")
    with Session(engine) as session:
        last = session.get_one(Thread, heads).last_date
    assert last is not None
    iso = last.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def shown(body: str) -> str:
        found = re.search(rf'<time datetime="{iso}">([^<]+)</time>', body)
        assert found is not None
        return found.group(1)

    def clock(zone: str) -> str:
        local = last.astimezone(ZoneInfo(zone))
        return f"{local.strftime('%I').lstrip('0')}:{local:%M}"

    body = await page(client, "/", "pallen@enron.com", "tz=Asia%2FTokyo")
    assert clock("Asia/Tokyo") in shown(body)
    # Not a zone: the default (UTC) stays, and nothing breaks.
    for bad in ("Mars%2FOlympus", "..%2F..%2Fetc%2Fpasswd"):
        body = await page(client, "/", "pallen@enron.com", f"tz={bad}")
        assert clock("UTC") in shown(body)


# --- 11. signatures and legal notices --------------------------------------------------------


def message_pk(engine: Engine, message_id: str) -> tuple[int, int]:
    """(thread id, pk) of the message with this Message-ID."""
    with Session(engine) as session:
        row = session.execute(
            select(Message.thread_id, Message.id).where(Message.message_id == message_id)
        ).one()
        return row[0], row[1]


def article(body: str, pk: int) -> str:
    start = body.index(f'id="m{pk}"')
    return body[start : body.index("</article>", start)]


def block(html: str, css_class: str) -> str | None:
    """The text of the first `<div class="css_class">`, unescaped; None when there is none."""
    found = re.search(rf'<div class="{css_class}">(.*?)</div>', html, re.S)
    return unescape(found.group(1)) if found else None


def notice(html: str) -> str | None:
    found = re.search(
        r'<details class="notice">\s*<summary>([^<]*)</summary>\s*<div class="text">(.*?)</div>',
        html,
        re.S,
    )
    return unescape(found.group(2)) if found else None


async def test_legal_notices_are_folded_and_what_people_wrote_is_not(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    cases = {
        # Message-ID: (end of the shown text, start of the folded notice)
        "12941261.1075841381679.JavaMail.evans@thyme": (
            "(See attached file: ng062602.pdf)",
            'This message and any attachments (the "message") is',
        ),
        "3852329.1075841973104.JavaMail.evans@thyme": (
            "Cindy Franklin\nEl Paso Transportation Services\n832.676.3177",
            "*****",
        ),
        "5F3A91C2.4000207@energies-rhone.fr": (
            "Claire Massé\nGestion de portefeuille – Énergies du Rhône\n04 72 00 00 00",
            "Ce message et toutes les pièces jointes",
        ),
    }
    for message_id, (text_ends, notice_starts) in cases.items():
        tid, pk = message_pk(engine, message_id)
        shown = article(await page(client, f"/t/{tid}", READER), pk)
        text = block(shown, "body text")
        assert text is not None and text.endswith(text_ends), text
        folded = notice(shown)
        assert folded is not None and folded.startswith(notice_starts), folded
        assert '<details class="notice" open' not in shown
        assert "Show the legal notice" in shown
    # Enron Legal writing about confidential information: all of it stays in view.
    tid, pk = message_pk(engine, "29364062.1075841337182.JavaMail.evans@thyme")
    shown = article(await page(client, f"/t/{tid}", READER), pk)
    text = block(shown, "body text")
    assert text is not None and "Enron's confidential information includes" in text
    assert text.endswith("Thank you,\nEnron Legal")
    assert notice(shown) is None and 'details class="notice"' not in shown


async def test_a_signature_shows_its_own_dashes_once_and_its_notice_folded(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    tid, pk = message_pk(engine, "4C1F2A9E.7030504@stadtwerke-lindenau.de")
    shown = article(await page(client, f"/t/{tid}", READER, "lang=fr"), pk)
    signature = block(shown, "signature")
    assert signature is not None
    assert (
        signature.startswith("--\nJürgen Weiß\nEnergiehandel") and "vertrauliche" not in signature
    )
    folded = notice(shown)
    assert folded is not None and folded.startswith("Diese E-Mail enthält vertrauliche")
    assert "Afficher la mention légale" in shown
    # The style sheet adds no second "--" before the text's own.
    css = await (await client.get("/static/style.css")).text()
    assert ".signature::before" not in css


# --- 13. spaces by name, senders by the name their mail gave ---------------------------------


async def test_lists_and_breadcrumbs_show_a_space_by_its_name(site: tuple[Client, Engine]) -> None:
    client, engine = site
    home = await page(client, "/", READER)
    assert '<a class="tag" href="/s/all-staff">All staff</a>' in home
    assert ">all-staff<" not in home
    # A thread's breadcrumb, and "Gas desk" (slug "gas") in another reader's list.
    tid, _pk = message_pk(engine, "3852329.1075841973104.JavaMail.evans@thyme")
    thread = await page(client, f"/t/{tid}", READER)
    assert '<a class="tag" href="/s/all-staff">All staff</a>' in thread
    listing = await page(client, "/", "k..allen@enron.com")
    assert '<a class="tag" href="/s/gas">Gas desk</a>' in listing and ">gas<" not in listing
    person = await page(client, "/p/cynthia.franklin%40elpaso.com", READER)
    assert ">All staff</a>" in person and ">all-staff<" not in person


async def test_a_sender_without_a_name_shows_the_name_other_mail_gave(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    with Session(engine) as session:
        name = session.execute(
            select(Person.name).where(Person.address == "cynthia.franklin@elpaso.com")
        ).scalar_one()
    assert name == "Franklin, Cynthia"
    # Her first message said only "From: cynthia.franklin@elpaso.com".
    tid, pk = message_pk(engine, "3852329.1075841973104.JavaMail.evans@thyme")
    shown = article(await page(client, f"/t/{tid}", READER), pk)
    sender = re.search(r'<span class="from"><a class="person"[^>]*>([^<]*)</a>', shown)
    assert sender is not None and unescape(sender.group(1)) == "Franklin, Cynthia"
    home = await page(client, "/", READER)
    assert "Franklin, Cynthia" in unescape(home)
    results = unescape(await page(client, "/search?q=Jude", READER))
    who = re.findall(r'<span class="who"[^>]*>([^<]*)</span>', results)
    assert who and set(who) == {"Franklin, Cynthia"}


# --- 15. tables in HTML-only mail ------------------------------------------------------------


def subject_pk(engine: Engine, subject: str) -> tuple[int, int]:
    with Session(engine) as session:
        row = session.execute(
            select(Message.thread_id, Message.id).where(Message.subject == subject)
        ).one()
        return row[0], row[1]


async def test_html_only_mail_with_a_data_table_shows_the_table_first(
    site: tuple[Client, Engine],
) -> None:
    client, engine = site
    tid, pk = subject_pk(engine, "PI")
    shown = article(await page(client, f"/t/{tid}", READER), pk)
    # The formatted message is the body; the flattened text waits behind a summary.
    assert shown.index('<div class="body html">') < shown.index('<details class="plain">')
    assert '<details class="formatted"' not in shown
    html = shown[shown.index('<div class="body html">') : shown.index('<details class="plain">')]
    assert "<table" in html and "<td" in html and "Booked Date" in html
    assert "<script" not in html and " style=" not in html  # sanitised
    assert "Show as plain text" in shown
    # Mail with a text version keeps its text first.
    tid, pk = message_pk(engine, "5F3A91C2.4000207@energies-rhone.fr")
    shown = article(await page(client, f"/t/{tid}", READER), pk)
    assert '<details class="plain">' not in shown and '<div class="body text">' in shown
