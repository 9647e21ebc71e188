"""Untrusted HTML: the XSS corpus (tests/data/xss) through parse and `page_html`.

These check the markup structurally; tests/web/test_xss_browser.py renders
the same corpus in Chromium and watches for script runs and requests.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from bridge.core.body.html import (
    has_remote_images,
    page_html,
    remote_image_origins,
    sanitize_html,
)
from bridge.core.mail.parse import parse_message
from tests.conftest import DATA

CORPUS = sorted((DATA / "xss").glob("*.eml"))
URL_ATTRIBUTES = {"href", "src", "cite", "data-remote-src"}
SAFE_SCHEMES = ("http://", "https://", "mailto:", "cid:")


class _Inspector(HTMLParser):
    """Every element and attribute of a fragment, as a browser tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def elements(html: str) -> list[tuple[str, dict[str, str]]]:
    inspector = _Inspector()
    inspector.feed(html)
    inspector.close()
    return inspector.elements


def assert_inert(html: str, *, local_images: bool = False, remote_images: bool = False) -> None:
    """No element or attribute that runs script, styles, frames, or fetches on its own."""
    allowed_src = ("/a/",) if local_images else ()
    if remote_images:
        allowed_src += ("http://", "https://")
    for tag, attrs in elements(html):
        assert tag not in {
            "script", "style", "svg", "math", "iframe", "object", "embed", "form", "input",
            "button", "link", "meta", "base", "video", "audio", "source", "picture", "template",
            "noscript", "textarea", "select", "frame", "frameset", "image", "applet",
        }, tag  # fmt: skip
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in {"style", "srcset", "background", "poster", "formaction", "id"}
            assert name not in {"name", "class", "target", "ping", "srcdoc", "action", "data"}
            if name in URL_ATTRIBUTES:
                squeezed = "".join(value.split()).lower()
                assert squeezed.startswith(SAFE_SCHEMES + allowed_src), (tag, name, value)
            if name == "src":
                assert value.startswith(("cid:", *allowed_src)), (tag, value)
        if tag == "a" and "href" in attrs:
            assert attrs["rel"] == "noopener noreferrer nofollow"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_is_inert_when_stored_and_shown(path: Path) -> None:
    parsed = parse_message(path.read_bytes())
    stored = parsed.html or ""
    assert_inert(stored)
    assert "<!--" not in stored
    inline = {a.content_id: f"/a/1/{i}" for i, a in enumerate(parsed.attachments) if a.content_id}
    shown = page_html(stored, inline)
    assert_inert(shown, local_images=True)
    # Cleaning again changes nothing: the output does not mutate on re-parse.
    plain = page_html(stored)
    assert page_html(plain) == plain
    assert_inert(
        page_html(stored, inline, remote_images=True), local_images=True, remote_images=True
    )


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 40
    htmls = [parse_message(p.read_bytes()).html for p in CORPUS]
    assert sum(h is not None for h in htmls) >= 35


def test_text_that_looks_like_markup_stays_text() -> None:
    out = sanitize_html("<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>")
    assert out == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


@pytest.mark.parametrize(
    "html",
    [
        '<img src="//tracker.example/p.gif">',
        '<img src="/logout">',
        '<img src="pixel.gif">',
        '<img srcset="https://t.example/a.gif 1x">',
        '<table background="https://t.example/t.gif"><tr><td>x</td></tr></table>',
        '<video poster="https://t.example/p.jpg"></video>',
        '<input type="image" src="https://t.example/i.png">',
        '<svg><image href="https://t.example/s.png"/></svg>',
        '<p style="background:url(https://t.example/bg.png)">x</p>',
        "<style>@import url(https://t.example/i.css); p{background:url(https://t.example/b)}</style>",
        '<link rel="stylesheet" href="https://t.example/s.css">',
        '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
    ],
)
def test_nothing_fetches_without_the_reader(html: str) -> None:
    for out in (sanitize_html(html), page_html(sanitize_html(html))):
        assert "t.example" not in out.replace('data-remote-src="https://t.example', "")
        assert " src=" not in out
        assert "url(" not in out


def test_remote_images_are_deferred_whatever_their_spelling() -> None:
    out = sanitize_html(
        '<img src=" HTTPS://x.example/a.png?a=1&b=2" alt="a"><img src="cid:p1">'
        '<img src="https:noslash.example/b.png">'
    )
    assert out == (
        '<img data-remote-src="HTTPS://x.example/a.png?a=1&amp;b=2" alt="a"><img src="cid:p1"><img>'
    )
    assert has_remote_images(out)
    assert not has_remote_images(sanitize_html('<img src="cid:p1">'))


def test_showing_remote_images_restores_http_sources_only() -> None:
    stored = (
        '<img data-remote-src="https://x.example/a.png?a=1&amp;b=2">'
        '<img data-remote-src="javascript:alert(1)">'
        '<img data-remote-src="https:noslash.example/b.png">'
        '<img data-remote-src="https://bad.example;script-src*/c.png">'
    )
    shown = page_html(stored, remote_images=True)
    assert shown == ('<img src="https://x.example/a.png?a=1&amp;b=2"><img><img><img>')
    assert page_html(stored) == stored.split("><")[0] + "><img><img><img>"


def test_remote_image_origins_are_safe_csp_sources() -> None:
    stored = sanitize_html(
        '<img src="https://A.example/x.png"><img src="http://b.example:8080/y">'
        '<img src="https://a.example/z"><img src="https://[::1]:9/v">'
        "<img src=\"https://e.example;script-src 'unsafe-inline'/p\">"
        '<img src="https:noslash.example/q"><img src="cid:part">'
    )
    assert remote_image_origins(stored) == [
        "http://b.example:8080",
        "https://[::1]:9",
        "https://a.example",
    ]


def test_inline_images_point_at_their_attachment_or_lose_src() -> None:
    stored = sanitize_html(
        '<img src="cid:logo%40corp.example" alt="logo"><img src="cid:gone@x" alt="gone">'
    )
    shown = page_html(stored, {"logo@corp.example": "/a/7/1", "gone@x": "https://evil.example/"})
    assert shown == '<img src="/a/7/1" alt="logo"><img alt="gone">'
    assert page_html(stored, {"logo@corp.example": "//evil.example/x"}).count(" src=") == 0


def test_links_get_rel_and_lose_target() -> None:
    out = sanitize_html('<a href="https://x.example/" target="_top" rel="opener">x</a>')
    assert out == '<a href="https://x.example/" rel="noopener noreferrer nofollow">x</a>'


def test_page_pass_cleans_rows_stored_under_an_older_policy() -> None:
    old = '<img src="//tracker.example/p.gif"><a href="tel:123">t</a><p onclick="x()">p</p>'
    assert page_html(old) == '<img><a rel="noopener noreferrer nofollow">t</a><p>p</p>'
