"""Unread, follow and mute in Chromium with JavaScript off: links and forms alone.

The reader read the RapidIO thread once; a new reply arrives through the real
pipeline. From the home page, its link lands on the first unread message
(`#unread`, scrolled into view); follow and mute are forms on the thread
page, and a muted thread leaves the home page until it is unmuted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser
from sqlalchemy import Engine

from tests.browser import artifact
from tests.marks_setup import MARKS_CONFIG, PARTY, deliver, root_thread
from tests.web.support import ENRON, LKML, SESSION_COOKIE, Site, config_from, served

CONFIG = config_from(MARKS_CONFIG)


@pytest.fixture
async def site(sqlite_engine: Engine) -> AsyncIterator[Site]:
    async with served(sqlite_engine, [ENRON, LKML], MARKS_CONFIG, PARTY) as site:
        yield site


async def test_home_link_lands_on_the_first_unread_and_forms_follow_and_mute(
    browser: Browser, site: Site
) -> None:
    context = await browser.new_context(
        java_script_enabled=False, locale="en-GB", viewport={"width": 1000, "height": 500}
    )
    await context.add_cookies(
        [{"name": SESSION_COOKIE, "value": site.cookie, "url": site.origin, "httpOnly": True}]
    )
    page = await context.new_page()
    tid = root_thread(site.engine)
    await page.goto(f"{site.origin}/t/{tid}")  # read once
    news = deliver(site.engine, CONFIG, 1, PARTY, "visible news")
    await page.goto(site.origin + "/")
    row = page.locator(f'li.thread-row:has(a.subject[href="/t/{tid}#unread"])')
    assert await row.get_attribute("data-unread") == "1"
    assert "1 unread" in await row.inner_text()
    await row.locator("a.subject").click()
    await page.wait_for_url(f"{site.origin}/t/{tid}#unread")
    mark = page.locator("#unread")
    # The anchor stands just before the new reply, and the page scrolled to it (as
    # far as it goes: the reply is the last message).
    following = await page.evaluate("document.getElementById('unread').nextElementSibling.id")
    assert following == f"m{news}"
    assert await page.evaluate("window.scrollY") > 0
    box = await mark.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 500
    await page.screenshot(path=str(artifact("unread.png")))
    # Opened: read. The home page says so at once.
    await page.goto(site.origin + "/")
    assert await page.locator(f'a.subject[href="/t/{tid}"]').count() == 1
    assert await page.locator(f'a.subject[href="/t/{tid}#unread"]').count() == 0
    # Follow, then mute, with the thread page's forms.
    await page.goto(f"{site.origin}/t/{tid}")
    await page.locator("form.watch button", has_text="Follow").click()
    await page.wait_for_url(f"{site.origin}/t/{tid}")
    assert "You follow this discussion" in await page.inner_text("main")
    await page.locator("form.watch button", has_text="Mute").click()
    await page.wait_for_url(f"{site.origin}/t/{tid}")
    assert "You muted this discussion" in await page.inner_text("main")
    await page.goto(site.origin + "/")
    assert await page.locator(f'a.subject[href^="/t/{tid}"]').count() == 0
    await page.locator("a.muted-link").click()
    await page.wait_for_url(f"{site.origin}/?muted=1")
    await page.locator(f'a.subject[href^="/t/{tid}"]').click()
    await page.locator("form.watch button", has_text="Unmute").click()
    await page.wait_for_url(f"{site.origin}/t/{tid}")
    await page.goto(site.origin + "/")
    assert await page.locator(f'a.subject[href^="/t/{tid}"]').count() == 1
    await context.close()
