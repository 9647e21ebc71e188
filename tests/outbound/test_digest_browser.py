"""The HTML digest in a real Chromium, light and dark: readable, self-contained, screenshotted."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from playwright.async_api import Browser, Page, Route
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.ingest.files import run_import
from bridge.outbound.digest_run import run
from bridge.store.tables import Outbox
from tests.browser import artifact
from tests.conftest import DATA
from tests.outbound.test_digests import CONFIG, load, seed_users

R_DEVEL = DATA / "rlists" / "r-devel-2020-November.txt"


# R-devel, November 2020: every thread in one space that R core reads.
R_CONFIG = """
[[spaces]]
slug = "r-devel"
name = "R development"
members = ["ripley@stats.ox.ac.uk"]
[[rules]]
name = "r-devel"
space = "r-devel"
"""
READER = "ripley@stats.ox.ac.uk"


def digest_for_r_core(engine: Engine) -> EmailMessage:
    config = load(CONFIG + R_CONFIG)
    run_import(engine, [str(R_DEVEL)], workers=1, rules=config.ruleset)
    seed_users(engine, [READER], datetime(2020, 11, 1, 7, tzinfo=UTC))
    run(engine, config, datetime(2020, 11, 28, 7, 30, tzinfo=UTC), only=READER)
    with Session(engine) as session:
        data = session.execute(select(Outbox.data)).scalar_one()
    return BytesParser(policy=policy.strict).parsebytes(data)  # type: ignore[return-value]


async def show(browser: Browser, html: str, scheme: str, outside: list[str]) -> Page:
    context = await browser.new_context(
        color_scheme=scheme,  # type: ignore[arg-type]
        viewport={"width": 700, "height": 900},
    )
    page = await context.new_page()

    async def refuse(route: Route) -> None:
        outside.append(route.request.url)
        await route.abort()

    await page.route("**/*", refuse)
    await page.set_content(html, wait_until="load")
    return page


LUMINANCE = """(selector) => {
  const rgb = s => s.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const el = document.querySelector(selector);
  const card = document.querySelector('.card');
  const fg = lum(rgb(getComputedStyle(el).color));
  const bg = lum(rgb(getComputedStyle(card).backgroundColor));
  return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
}"""


async def test_the_digest_renders_readably_in_light_and_dark(
    sqlite_engine: Engine, browser: Browser
) -> None:
    message = digest_for_r_core(sqlite_engine)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    subjects = [line[2:] for line in text.splitlines() if line.startswith("* ")]
    assert len(subjects) >= 3
    outside: list[str] = []
    for scheme, name in (("light", "digest.png"), ("dark", "digest-dark.png")):
        page = await show(browser, html, scheme, outside)
        for subject in subjects:
            link = page.get_by_role("link", name=subject, exact=True)
            await link.wait_for(state="visible")
            href = await link.get_attribute("href")
            assert href is not None and href.startswith("https://bridge.example.com/t/")
        unsubscribe = page.get_by_role("link", name="Unsubscribe from digests")
        assert await unsubscribe.is_visible()
        # WCAG AA: 4.5:1 for body text, in both schemes.
        assert await page.evaluate(LUMINANCE, ".text") >= 4.5
        assert await page.evaluate(LUMINANCE, ".link") >= 4.5
        assert await page.evaluate(LUMINANCE, ".muted") >= 4.5
        width = await page.evaluate("() => document.querySelector('.card').offsetWidth")
        assert width <= 600
        await page.screenshot(path=str(artifact(name)), full_page=True)
        await page.context.close()
    assert outside == []  # no images, fonts or trackers: nothing fetched
