"""Signing in by emailed link in Chromium: ask, read the mail from the outbox, open, press, read."""

from __future__ import annotations

from playwright.async_api import Browser
from sqlalchemy import Engine

from tests.browser import artifact
from tests.web import auth_helpers
from tests.web.auth_helpers import STAFF, MakeSite, link_in

make_site = auth_helpers.make_site  # the fixture


async def test_sign_in_by_link_in_chromium(
    sqlite_engine: Engine, make_site: MakeSite, browser: Browser
) -> None:
    site = await make_site(sqlite_engine)
    origin = str(site.client.make_url("")).rstrip("/")
    site.configure(base_url=origin)
    context = await browser.new_context(locale="en-GB")
    page = await context.new_page()

    # A page that needs a reader sends them to sign in, and back afterwards.
    await page.goto(origin + "/settings")
    assert page.url == origin + "/login?next=/settings"
    await page.fill("input[name=address]", STAFF)
    await page.click("button:has-text('Send me a sign-in link')")
    await page.wait_for_selector("text=Check your mail")

    (mail,) = site.mail()
    assert mail["To"] == STAFF
    link = link_in(mail, origin)

    # Opening the link shows a button; the link is still unused.
    await page.goto(link)
    await page.wait_for_selector("button:has-text('Sign in')")
    await page.screenshot(path=str(artifact("signin-confirm.png")), full_page=True)
    await page.click("main button:has-text('Sign in')")
    await page.wait_for_url(origin + "/settings")
    assert STAFF in await page.inner_text("main")
    await page.screenshot(path=str(artifact("signin.png")), full_page=True)

    (cookie,) = [c for c in await context.cookies() if c["name"] == "bridge_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"

    # The same link again: a clear page offering a new one.
    await page.goto(link)
    assert "This link no longer works" in await page.inner_text("main")
    assert await page.locator("main form[action='/login'] input[name=address]").count() == 1

    # Signing out ends it.
    await page.goto(origin + "/settings")
    await page.click("header button:has-text('Sign out')")
    await page.goto(origin + "/settings")
    assert page.url.startswith(origin + "/login")
    await context.close()
