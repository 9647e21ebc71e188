"""The reading pages in Chromium, on real mail: browse, search, fold quotes, switch views, French.

Enron's inboxes and two months of r-devel are imported through the real
pipeline; a staff reader browses them as a person would, clicking. The
thread and search pages are kept as screenshots (test-artifacts/thread.png,
search.png).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page
from sqlalchemy import Engine

from tests.browser import artifact
from tests.conftest import DATA
from tests.web.support import CONFIG, ENRON, SESSION_COOKIE, imported, sign_in, viewer_app

READER = "kam.keiser@enron.com"  # staff, and a party to the "Heads up" thread
RLISTS = [
    DATA / "rlists" / "r-devel-1998-December.txt",
    DATA / "rlists" / "r-devel-2020-November.txt",
]
# Everything the other rules leave goes to a staff-wide space, so the reader sees r-devel.
PAGES_CONFIG = (
    CONFIG
    + """
[[spaces]]
slug = "r-devel"
name = "R development"
visibility = "staff"

[[rules]]
name = "lists"
space = "r-devel"
[rules.match]
subject = '^'
"""
)


@dataclass
class Site:
    server: TestServer
    cookie: str

    @property
    def origin(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def site(sqlite_engine: Engine) -> AsyncIterator[Site]:
    config = imported(sqlite_engine, [ENRON, *RLISTS], PAGES_CONFIG)
    app = viewer_app(sqlite_engine, config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    cookie = sign_in(app, READER)["Cookie"].split("=", 1)[1]
    try:
        yield Site(server, cookie)
    finally:
        await server.close()


async def reader_context(browser: Browser, site: Site, **options: object) -> BrowserContext:
    options.setdefault("locale", "en-GB")
    options.setdefault("viewport", {"width": 1100, "height": 900})
    context = await browser.new_context(**options)  # type: ignore[arg-type]
    await context.add_cookies(
        [{"name": SESSION_COOKIE, "value": site.cookie, "url": site.origin, "httpOnly": True}]
    )
    return context


async def open_heads_up(page: Page, site: Site) -> None:
    """Home → the Trading space → the "Heads up" thread, by clicking."""
    await page.goto(site.origin + "/")
    await page.locator('a[href="/s/trading"]').first.click()
    await page.wait_for_url(site.origin + "/s/trading")
    await page.locator("main a", has_text="Heads up").first.click()
    await page.wait_for_url(f"{site.origin}/t/*")


async def test_browse_home_space_thread(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    await page.goto(site.origin + "/")
    home = await page.inner_text("main")
    assert "Heads up" in home and "Trading" in home
    await open_heads_up(page, site)
    assert await page.locator("h1").inner_text() == "Heads up"
    messages = page.locator("article.msg")
    assert await messages.count() >= 4
    # The reply tree: some replies sit deeper than the first message.
    classes = [await messages.nth(i).get_attribute("class") or "" for i in range(4)]
    assert any(" d1" in c or " d2" in c for c in classes), classes
    assert "Hey Gang" in await page.inner_text("main")
    await page.screenshot(path=str(artifact("thread.png")), full_page=True)
    await context.close()


async def test_quotes_are_folded_and_open_on_request(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    await open_heads_up(page, site)
    folded = page.locator("details.quoted")
    assert await folded.count() >= 1
    first = folded.first
    quoted = first.locator(".text")
    assert not await quoted.is_visible()
    assert "Original Message" in await quoted.text_content()  # type: ignore[operator]
    await first.locator("summary").click()
    assert await quoted.is_visible()
    # With script, one button opens them all.
    toggle = page.locator("#toggle-quotes")
    assert await toggle.is_visible()
    await toggle.click()
    for index in range(await folded.count()):
        assert await folded.nth(index).get_attribute("open") is not None
    await context.close()


async def test_quotes_fold_without_javascript(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site, java_script_enabled=False)
    page = await context.new_page()
    await open_heads_up(page, site)
    first = page.locator("details.quoted").first
    quoted = first.locator(".text")
    assert not await quoted.is_visible()
    await first.locator("summary").click()
    assert await quoted.is_visible()
    # The script-only button stays hidden; nothing depends on it.
    assert not await page.locator("#toggle-quotes").is_visible()
    await context.close()


async def test_flat_and_tree_views(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    await open_heads_up(page, site)
    tree_url = page.url.split("#")[0]  # the first visit lands on #unread
    tree_ids = await page.locator("article.msg").evaluate_all("els => els.map(e => e.id)")
    await page.locator("nav.views a", has_text="By date").click()
    await page.wait_for_url("**view=flat**")
    flat = page.locator("article.msg")
    flat_ids = await flat.evaluate_all("els => els.map(e => e.id)")
    assert sorted(flat_ids) == sorted(tree_ids)
    stamps = await flat.locator("a.date time").evaluate_all(
        "els => els.map(e => e.getAttribute('datetime'))"
    )
    assert stamps == sorted(stamps) and len(stamps) == len(flat_ids)
    await page.locator("nav.views a", has_text="Replies as a tree").click()
    await page.wait_for_url(tree_url)
    await context.close()


async def test_search_highlights_and_paginates(browser: Browser, site: Site) -> None:
    context = await reader_context(browser, site)
    page = await context.new_page()
    await page.goto(site.origin + "/")
    box = page.locator("header input[name=q]")
    # More than one page of discussions mention R.
    await box.fill("R")
    await box.press("Enter")
    await page.wait_for_url("**/search?q=R**")
    marks = page.locator("ol.results .snippet mark")
    assert await marks.count() >= 5
    assert {text.lower() for text in await marks.all_inner_texts()} == {"r"}
    first_page = await page.locator("ol.results a.subject").all_inner_texts()
    await page.screenshot(path=str(artifact("search.png")), full_page=True)
    await page.locator("a[rel=next]").first.click()
    await page.wait_for_url("**page=2**")
    second_page = await page.locator("ol.results a.subject").all_inner_texts()
    assert second_page and not set(first_page) & set(second_page)
    assert await page.locator("a[rel=prev]").count() == 1
    # A result leads to its message, inside its thread.
    await page.locator("ol.results a.subject").first.click()
    await page.wait_for_url(f"{site.origin}/t/*")
    assert await page.locator("article.msg").count() >= 1
    await context.close()


async def test_french_interface(browser: Browser, site: Site) -> None:
    # From the browser's language…
    context = await reader_context(browser, site, locale="fr-FR")
    page = await context.new_page()
    await open_heads_up(page, site)
    assert await page.get_attribute("html", "lang") == "fr"
    assert await page.locator("nav.views a", has_text="Par date").count() == 1
    assert await page.locator("details.quoted summary", has_text="Afficher le texte cité").count()
    await context.close()
    # …and by choice, from an English browser.
    context = await reader_context(browser, site)
    page = await context.new_page()
    await open_heads_up(page, site)
    assert await page.get_attribute("html", "lang") == "en"
    await page.locator("header button", has_text="Français").click()
    await page.wait_for_load_state("load")
    assert await page.get_attribute("html", "lang") == "fr"
    assert "Heads up" in await page.locator("h1").inner_text()
    await page.locator("header input[name=q]").fill("weapon")
    await page.locator("header input[name=q]").press("Enter")
    await page.wait_for_url("**/search?q=weapon**")
    assert await page.locator("h1", has_text="Recherche").count() == 1
    await context.close()
