"""The XSS corpus in Chromium: zero script runs, zero requests beyond the viewer.

The corpus (tests/data/xss) is imported through the real pipeline and served
by the real app on a loopback port. A signed-in reader opens every page that
shows it: home, space, every thread (tree, flat, and with remote images),
every page of search results, every sender's page, and every attachment.
The payloads call `window.__pwned()`, `top.__pwned()` or `alert()`; the
page exposes `__pwned`, answers dialogs, listens to the console and to
Content-Security-Policy violations, and routes every request: any
payload that ran, any request to another host, any blocked attempt fails.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page, Route
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.core.admin_rules.loops import ORIGIN_HEADER
from bridge.core.mail.parse import ParseLimits
from bridge.ingest.files import run_import
from bridge.outbound import outbox
from bridge.store.tables import Attachment, ImapState, Message, Person, Quarantined, Thread
from tests.conftest import DATA
from tests.web.support import SESSION_COOKIE, imported, sign_in, viewer_app

READER = "reader@corp.example"
XSS_CONFIG = """
[web]
cookie_secure = false
admins = ["admin@corp.example"]

[[spaces]]
slug = "lab"
name = "Lab <script>window.__pwned('space-name')</script>"
members = ["reader@corp.example"]

[[rules]]
name = "lab"
space = "lab"
[rules.match]
to = "reader@corp.example"
"""
# What the tracking pixels and remote images of the corpus point at.
REMOTE_HOSTS = {"tracker.example", "images.evil.example"}
# Listens for what the CSP blocked: a blocked attempt means the sanitiser let it through.
WATCH_CSP = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp_violation(e.violatedDirective + ' ' + e.blockedURI);
});
"""
# The live DOM, after Chromium parsed it: nothing that runs or fetches by itself.
DOM_CHECK = """
() => {
  const URL_ATTRIBUTES = ['href', 'src', 'action', 'data', 'poster', 'srcset', 'background',
                          'xlink:href'];
  const ACTIVE_TAGS = ['iframe', 'frame', 'object', 'embed', 'applet', 'base', 'svg', 'math',
                       'template', 'noscript', 'video', 'audio'];
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      if (name.startsWith('on') || name === 'style' || name === 'srcdoc' || name === 'formaction')
        bad.push(el.tagName + ' ' + name);
      if (URL_ATTRIBUTES.includes(name)) {
        const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase();
        const active = /^(javascript|data|vbscript|livescript|file):/.test(value);
        if (active && !value.startsWith('data:image/'))
          bad.push(el.tagName + ' ' + name + '=' + attr.value);
      }
    }
    const tag = el.tagName.toLowerCase();
    if (ACTIVE_TAGS.includes(tag)) bad.push(tag);
    if (tag === 'script' && !(el.getAttribute('src') || '').startsWith('/static/'))
      bad.push('script ' + el.outerHTML.slice(0, 80));
    if (tag === 'style') bad.push('style');
    // Our own: the stylesheet, and the reader's Atom feed named in the head.
    const href = el.getAttribute('href') || '';
    const feed = el.getAttribute('rel') === 'alternate' && el.parentElement === document.head
      && el.getAttribute('type') === 'application/atom+xml' && href.includes('/feeds/');
    if (tag === 'link' && !href.startsWith('/static/') && !feed) bad.push('link');
    if (tag === 'meta' && el.getAttribute('http-equiv')) bad.push('meta http-equiv');
    if (tag === 'form' && !(el.getAttribute('action') || '').startsWith('/')) bad.push('form');
  }
  return bad;
}
"""


@dataclass
class Watch:
    """What the pages did that they must not."""

    origin: str
    images: bool = False
    pwned: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    outside: list[tuple[str, str]] = field(default_factory=list)  # (resource type, url)
    downloads: list[str] = field(default_factory=list)

    def clean(self) -> bool:
        return not (self.pwned or self.dialogs or self.console or self.csp or self.outside)


@dataclass
class Site:
    server: TestServer
    engine: Engine
    cookie: str
    status: dict[str, dict[str, object]] = field(default_factory=dict)  # sources' live state

    @property
    def origin(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def site(sqlite_engine: Engine) -> AsyncIterator[Site]:
    config = imported(sqlite_engine, sorted((DATA / "xss").glob("*.eml")), XSS_CONFIG)
    status: dict[str, dict[str, object]] = {}
    app = viewer_app(sqlite_engine, config, status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    header = sign_in(app, READER)["Cookie"]
    try:
        yield Site(server, sqlite_engine, header.split("=", 1)[1], status)
    finally:
        await server.close()


async def watched_page(context: BrowserContext, watch: Watch) -> Page:
    page = await context.new_page()
    await page.expose_function("__pwned", lambda *args: watch.pwned.append(repr(args)))
    await page.expose_function("__csp_violation", lambda report: watch.csp.append(report))
    await page.add_init_script(WATCH_CSP)

    async def on_dialog(dialog: Dialog) -> None:
        watch.dialogs.append(dialog.message)
        await dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        watch.console.append(f"{message.type}: {message.text}")

    async def route(route: Route) -> None:
        url = route.request.url
        if url.startswith(watch.origin + "/"):
            await route.continue_()
            return
        watch.outside.append((route.request.resource_type, url))
        if watch.images and route.request.resource_type == "image":
            await route.fulfill(status=204, body=b"")
        else:
            await route.abort()

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("download", lambda d: watch.downloads.append(d.suggested_filename))
    await page.route("**/*", route)
    return page


async def new_context(browser: Browser, site: Site, **options: Any) -> BrowserContext:
    context = await browser.new_context(**options)
    await context.add_cookies(
        [{"name": SESSION_COOKIE, "value": site.cookie, "url": site.origin, "httpOnly": True}]
    )
    return context


async def settle(page: Page) -> None:
    """Two animation frames after load: deferred script has run, autofocus has fired."""
    await page.evaluate(
        "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )


async def visit(page: Page, url: str, watch: Watch) -> None:
    response = await page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, url
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, url
    assert "default-src 'none'" in csp, url
    # Let deferred script, autofocus and focus events have their turn.
    await settle(page)
    bad = await page.evaluate(DOM_CHECK)
    assert not bad, (url, bad)
    # Text from the corpus stays text: what the payloads wrote shows as characters.
    assert watch.clean(), (url, watch)


def thread_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(session.execute(select(Thread.id).order_by(Thread.id)).scalars())


def senders(engine: Engine) -> list[str]:
    with Session(engine) as session:
        query = select(Person.address).join(Message, Message.sender_id == Person.id).distinct()
        return sorted(session.execute(query).scalars())


def attachments(engine: Engine) -> list[tuple[int, int, str, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(
                Attachment.message_pk,
                Attachment.position,
                Attachment.filename,
                Attachment.content_type,
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_corpus_runs_no_script_and_reaches_no_other_host(
    browser: Browser, site: Site
) -> None:
    watch = Watch(site.origin)
    context = await new_context(browser, site)
    page = await watched_page(context, watch)
    threads = thread_ids(site.engine)
    assert len(threads) >= 40
    pages = ["/", "/s/lab", "/search?q=xylophone", "/search?q=script"]
    pages += [f"/p/{address}" for address in senders(site.engine)]
    for tid in threads:
        pages += [f"/t/{tid}", f"/t/{tid}?view=flat"]
    for path in pages:
        await visit(page, site.origin + path, watch)
    # The quoted history and every other toggle, opened: still nothing runs.
    for tid in threads:
        await visit(page, f"{site.origin}/t/{tid}", watch)
        for toggle in await page.locator("details > summary").all():
            if await toggle.is_visible():
                await toggle.click()
        assert watch.clean(), (tid, watch)
    await context.close()


async def test_search_pages_are_inert_to_the_last_page(browser: Browser, site: Site) -> None:
    watch = Watch(site.origin)
    context = await new_context(browser, site)
    page = await watched_page(context, watch)
    seen = 0
    url: str | None = f"{site.origin}/search?q=xylophone"
    while url:
        await visit(page, url, watch)
        seen += 1
        following = page.locator("a[rel=next]")
        url = await following.first.get_attribute("href") if await following.count() else None
        if url:
            url = site.origin + url if url.startswith("/") else url
    assert seen >= 2  # the corpus fills more than one page of results
    await context.close()


async def test_remote_images_load_only_when_asked_and_only_images(
    browser: Browser, site: Site
) -> None:
    watch = Watch(site.origin, images=True)
    context = await new_context(browser, site)
    page = await watched_page(context, watch)
    for tid in thread_ids(site.engine):
        response = await page.goto(f"{site.origin}/t/{tid}?images=1", wait_until="load")
        assert response is not None and response.status == 200
        await settle(page)
        assert not (watch.pwned or watch.dialogs or watch.csp), (tid, watch)
        assert not await page.evaluate(DOM_CHECK)
    # The tracking pixel loaded now, and only images did, from the hosts the mail named.
    assert {"tracker.example", "images.evil.example"} <= {
        urlsplit(url).hostname for _, url in watch.outside
    }
    assert {kind for kind, _ in watch.outside} == {"image"}
    assert {urlsplit(url).hostname for _, url in watch.outside} <= REMOTE_HOSTS
    await context.close()


async def test_tracking_pixel_waits_for_the_reader(browser: Browser, site: Site) -> None:
    watch = Watch(site.origin, images=True)
    context = await new_context(browser, site)
    page = await watched_page(context, watch)
    tid = next(t for t in thread_ids(site.engine) if _subject(site, t) == "tracking pixel")
    await visit(page, f"{site.origin}/t/{tid}", watch)
    assert watch.outside == []
    assert await page.locator("img[data-remote-src]").count() >= 3
    # The page offers the reader a way to show them; following it loads them.
    link = page.locator('a[href*="images=1"]')
    assert await link.count() >= 1
    await link.first.click()
    await page.wait_for_load_state("load")
    await settle(page)
    assert "https://tracker.example/p.gif?u=reader" in [url for _, url in watch.outside]
    csp = await _csp(site, f"/t/{tid}?images=1")
    assert "https://tracker.example" in csp and "http://tracker.example" in csp
    await context.close()


def _subject(site: Site, tid: int) -> str:
    with Session(site.engine) as session:
        return session.execute(select(Thread.subject).where(Thread.id == tid)).scalar_one()


async def _csp(site: Site, path: str) -> str:
    async with (
        ClientSession(cookies={SESSION_COOKIE: site.cookie}) as http,
        http.get(site.origin + path) as response,
    ):
        assert response.status == 200
        return response.headers["Content-Security-Policy"]


async def test_attachments_download_and_never_render(browser: Browser, site: Site) -> None:
    watch = Watch(site.origin)
    context = await new_context(browser, site, accept_downloads=True)
    page = await watched_page(context, watch)
    rows = attachments(site.engine)
    assert {"text/html", "image/svg+xml"} <= {ctype for *_, ctype in rows}
    async with ClientSession(cookies={SESSION_COOKIE: site.cookie}) as http:
        for pk, position, filename, ctype in rows:
            async with http.get(f"{site.origin}/a/{pk}/{position}") as response:
                assert response.status == 200
                headers = response.headers
                assert headers["X-Content-Type-Options"] == "nosniff"
                disposition = headers["Content-Disposition"]
                assert disposition.startswith("attachment;"), disposition
                name = re.search(r'filename="([^"]*)"', disposition)
                assert name and "/" not in name.group(1) and "\\" not in name.group(1)
                assert not name.group(1).startswith("."), disposition
                assert "\r" not in disposition and "\n" not in disposition
                if ctype in ("text/html", "image/svg+xml") or filename.endswith((".html", ".svg")):
                    assert headers["Content-Type"].startswith("application/octet-stream")
    # Clicked in the thread page, each attachment link downloads and runs nothing.
    clicked = 0
    for tid in thread_ids(site.engine):
        await visit(page, f"{site.origin}/t/{tid}", watch)
        links = page.locator('a[href^="/a/"], a[href^="/raw/"]')
        for index in range(await links.count()):
            async with page.expect_download() as info:
                await links.nth(index).click()
            download = await info.value
            assert "/" not in download.suggested_filename
            clicked += 1
        assert watch.clean(), (tid, watch)
    assert clicked >= len(rows)
    # Opened directly, an attachment is a download too, never a page in our origin.
    for pk, position, _name, ctype in rows:
        if ctype in ("text/html", "image/svg+xml"):
            async with page.expect_download():
                try:
                    await page.goto(f"{site.origin}/a/{pk}/{position}")
                except Exception as exc:  # Playwright: "Download is starting"
                    assert "Download is starting" in str(exc)
    assert watch.clean(), watch
    await context.close()


async def test_headers_from_the_corpus_are_escaped(browser: Browser, site: Site) -> None:
    """Subjects and display names with markup show as text, on the thread and the person page."""
    watch = Watch(site.origin)
    context = await new_context(browser, site)
    page = await watched_page(context, watch)
    expected = {
        "subject-1": ["<script>window.__pwned('subject-1')</script>", "onerror=alert('subject-2')"],
        "ew-2": ["<img src=x onerror=alert('ew-2')>", "<script>window.__pwned('ew-1')</script>"],
    }
    for marker, texts in expected.items():
        tid = next(t for t in thread_ids(site.engine) if marker in _subject(site, t))
        await visit(page, f"{site.origin}/t/{tid}", watch)
        body = await page.inner_text("body")
        for text in texts:
            assert text in body, (marker, text, body)
        assert texts[0][:20] in await page.title()
    await visit(page, f"{site.origin}/p/ew@evil.example", watch)
    assert "<script>window.__pwned('ew-1')</script>" in await page.inner_text("body")
    await context.close()


PAYLOAD = "<img src=x onerror=__pwned('{0}')><script>__pwned('{0}')</script>"


def admin_cases(site: Site, folder: Path) -> None:
    """Quarantine, an id collision and a failed outbound mail, each carrying payloads."""
    folder.mkdir()
    for source in sorted((DATA / "xss").glob("*.eml"))[:12]:
        (folder / f"{source.stem}<svg onload=__pwned('path')>.eml").write_bytes(source.read_bytes())
    # Parsed under tight limits, every one of them is held with its bytes and the reason.
    held = run_import(site.engine, [str(folder)], workers=1, limits=ParseLimits(max_bytes=200))
    assert held.tally.outcomes["quarantined"] == 12
    # Another text under a stored Message-ID: an id collision, shown on its admin page.
    twin = (
        (DATA / "xss" / "01-script-tag.eml")
        .read_bytes()
        .replace(b"xylophone payload message", PAYLOAD.format("collision").encode())
    )
    (folder / "twin.eml").write_bytes(twin)
    (folder / "twin.eml").rename(folder.parent / "twin.eml")
    run_import(site.engine, [str(folder.parent / "twin.eml")], workers=1)
    subject = PAYLOAD.format("outbox-subject")
    data = (
        f"{ORIGIN_HEADER}: bridge.example.com\r\nMessage-ID: <x@bridge.example.com>\r\n"
        f"Subject: {subject}\r\n\r\nbody\r\n"
    ).encode()
    now = datetime.now(UTC)
    with Session(site.engine) as session, session.begin():
        outbox.enqueue(session, data, recipients=["x@corp.example"], now=now)
    with Session(site.engine) as session, session.begin():
        [item] = outbox.claim(session, now)
        outbox.mark_failed(session, item, "550 " + PAYLOAD.format("outbox-reason"))
        # A shared mailbox's folder name and an IMAP server's error text.
        session.add(
            ImapState(
                account="sales",
                folder="INBOX/" + PAYLOAD.format("imap-folder"),
                uidvalidity=1,
                last_uid=7,
                updated_at=now,
            )
        )
    site.status["imap:sales"] = {"state": "error", "error": PAYLOAD.format("imap-error")}


async def test_admin_pages_and_reflected_input_run_no_script(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    """What admins read (quarantine, collisions, failed mail) and what a URL reflects."""
    admin_cases(site, tmp_path / "held")
    header = sign_in(site.server.app, "admin@corp.example")["Cookie"]
    admin = Site(site.server, site.engine, header.split("=", 1)[1], site.status)
    watch = Watch(site.origin)
    context = await new_context(browser, admin)
    page = await watched_page(context, watch)
    with Session(site.engine) as session:
        held = list(session.execute(select(Quarantined.id)).scalars())
    pages = ["/admin", "/admin/quarantine", "/admin/collisions", "/admin/rules"]
    pages += ["/admin/imap", "/admin/outbox"] + [f"/admin/quarantine/{i}" for i in held]
    for reflected in ("search?q=", "search?page=2&q="):
        pages.append("/" + reflected + quote(PAYLOAD.format("reflected") + '" onmouseover="x'))
    for path in pages:
        await visit(page, site.origin + path, watch)
    body = await page.content()
    assert "__pwned" in body  # the payload is on the page, as text
    await visit(page, site.origin + "/admin/outbox", watch)
    assert PAYLOAD.format("outbox-reason") in await page.inner_text("body")
    await visit(page, site.origin + "/admin/imap", watch)
    shown = await page.inner_text("body")
    assert PAYLOAD.format("imap-error") in shown and PAYLOAD.format("imap-folder") in shown
    await visit(page, site.origin + "/admin/collisions", watch)
    assert "xss-01@evil.example" in await page.inner_text("body")
    await context.close()


async def test_the_watch_sees_a_script_run(browser: Browser) -> None:
    """The control: the same watch, on a page without our sanitiser or CSP, catches it all."""
    watch = Watch("http://127.0.0.1:9")
    context = await browser.new_context()
    page = await watched_page(context, watch)
    await page.set_content(
        "<img src=x onerror=\"window.__pwned('control-1')\">"
        "<script>top.__pwned('control-2'); alert('control-3'); console.log('control-4')</script>"
        '<img src="https://tracker.example/control.gif">'
    )
    await settle(page)
    assert sorted(watch.pwned) == ["('control-1',)", "('control-2',)"]
    assert watch.dialogs == ["control-3"]
    assert "log: control-4" in watch.console
    assert ("image", "https://tracker.example/control.gif") in watch.outside
    found = await page.evaluate(DOM_CHECK)
    assert "IMG onerror" in found and any(item.startswith("script <script>") for item in found)
    await context.close()
