"""The viewer's details in Chromium, as a reader sees them (issue 11, items 10, 11, 13, 15).

The reader's browser runs in America/Chicago; the messages come from the
Enron maildir and the real messages under tests/data/viewer/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, BrowserContext, Page
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.i18n import format_datetime
from bridge.store.tables import Message, Thread
from tests.browser import artifact
from tests.web.support import ENRON, SESSION_COOKIE, Site, served
from tests.web.test_viewer_details import VIEWER_CONFIG, VIEWER_MAIL

READER = "judy.townsend@enron.com"  # staff, so she reads "All staff"; a party to "Hey Jude"


@pytest.fixture
async def site(sqlite_engine: Engine) -> AsyncIterator[Site]:
    async with served(sqlite_engine, [ENRON, VIEWER_MAIL], VIEWER_CONFIG, READER) as site:
        yield site


async def reader_context(browser: Browser, site: Site, **options: object) -> BrowserContext:
    options.setdefault("locale", "en-US")
    options.setdefault("viewport", {"width": 1100, "height": 900})
    context = await browser.new_context(**options)  # type: ignore[arg-type]
    await context.add_cookies(
        [{"name": SESSION_COOKIE, "value": site.cookie, "url": site.origin, "httpOnly": True}]
    )
    return context


def thread_of(engine: Engine, subject_start: str) -> Thread:
    with Session(engine) as session:
        tid = session.execute(
            select(Message.thread_id).where(Message.subject.startswith(subject_start)).limit(1)
        ).scalar_one()
        return session.get_one(Thread, tid)


async def test_dates_are_shown_in_the_browsers_zone(browser: Browser, site: Site) -> None:
    jude = thread_of(site.engine, "Hey Jude")
    assert jude.last_date is not None
    last = jude.last_date.replace(tzinfo=UTC)
    iso = last.strftime("%Y-%m-%dT%H:%M:%SZ")
    context = await reader_context(browser, site, timezone_id="America/Chicago")
    page = await context.new_page()
    # The first page tells the server the zone (app.js sets a cookie); the next ones use it.
    await page.goto(site.origin + "/")
    cookie = await page.evaluate("document.cookie")
    assert "tz=America%2FChicago" in cookie
    await page.reload()
    shown = await page.locator(f'main time[datetime="{iso}"]').first.inner_text()
    expected = format_datetime(last, "en", ZoneInfo("America/Chicago"), "short")
    assert shown == expected, (shown, expected)
    assert shown != format_datetime(last, "en", ZoneInfo("UTC"), "short")
    await page.screenshot(path=str(artifact("home-chicago.png")), full_page=True)
    await context.close()


async def open_thread(page: Page, site: Site, subject: str) -> None:
    """Home → the "All staff" space (by its name) → the thread, by clicking."""
    await page.goto(site.origin + "/")
    await page.locator("main a.tag", has_text="All staff").first.click()
    await page.wait_for_url(site.origin + "/s/all-staff")
    assert await page.locator("h1").inner_text() == "All staff"
    await page.locator("main a.subject", has_text=subject).first.click()
    await page.wait_for_url(f"{site.origin}/t/*")


async def test_notices_fold_and_signatures_show_one_dash_line(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site, locale="de-DE")
    page = await context.new_page()
    await open_thread(page, site, "Lieferplan Juli")
    message = page.locator("article.msg").first
    # Spaces and people by name: the breadcrumb, and the sender.
    assert await page.locator("header.thread-head a.tag").inner_text() == "All staff"
    assert await message.locator(".from").inner_text() == "Jürgen Weiß"
    # The signature as written, "--" once: the style sheet adds none before it.
    signature = message.locator(".signature")
    before = await signature.evaluate("e => getComputedStyle(e, '::before').content")
    assert before in ("none", "normal", "")
    shown = await signature.inner_text()
    assert shown.startswith("--\nJürgen Weiß") and shown.count("--") == 1
    # The notice is folded, and opens on request.
    notice = message.locator("details.notice")
    assert await notice.count() == 1
    text = notice.locator(".text")
    assert not await text.is_visible()
    assert "vertrauliche" not in await message.inner_text()
    await notice.locator("summary").click()
    assert await text.is_visible()
    assert "Diese E-Mail enthält vertrauliche" in await text.inner_text()
    await page.screenshot(path=str(artifact("notice.png")), full_page=True)
    await context.close()


async def test_a_note_about_confidentiality_is_read_in_full(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    await open_thread(page, site, "Confidentiality Reminder")
    message = page.locator("article.msg").first
    assert await message.locator("details.notice").count() == 0
    body = await message.locator(".body.text").inner_text()
    assert "Enron's confidential information includes" in body and body.endswith("Enron Legal")
    await context.close()


async def test_a_sender_is_named_from_her_other_mail(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    # Her first message, by its permalink.
    await page.goto(site.origin + "/m/3852329.1075841973104.JavaMail.evans@thyme")
    await page.wait_for_url(f"{site.origin}/t/*#m*")
    first = page.locator("article.msg#" + page.url.rsplit("#", 1)[1])
    # This message said "From: cynthia.franklin@elpaso.com"; her later one gave her name.
    assert await first.locator(".from").inner_text() == "Franklin, Cynthia"
    assert "832.676.3177" in await first.locator(".body.text").inner_text()
    assert not await first.locator("details.notice .text").is_visible()
    await context.close()


async def test_a_table_in_html_only_mail_is_shown_as_a_table(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    await open_thread(page, site, "PI")
    message = page.locator("article.msg").first
    table = message.locator(".body.html table", has_text="Booked Date")
    assert await table.is_visible()
    # Columns line up: a heading and the value under it start at the same x.
    for heading, value in (("Booked Date", "19/08/2016"), ("Settlement Amount", "103319.37")):
        top = await table.locator("td", has_text=heading).bounding_box()
        below = await table.locator("td", has_text=value).bounding_box()
        assert top is not None and below is not None
        assert abs(top["x"] - below["x"]) < 1 and below["y"] > top["y"]
    # The flattened text is there on request, folded.
    plain = message.locator("details.plain")
    assert not await plain.locator(".body.text").is_visible()
    await plain.locator("summary").click()
    assert "Booked Date" in await plain.locator(".body.text").inner_text()
    await page.screenshot(path=str(artifact("html-table.png")), full_page=True)
    await context.close()
