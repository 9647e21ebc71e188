"""HTML sanitising and HTML → text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.body.html import html_to_text, sanitize_html

ATTACK = """<p onclick="x()">Hi<script>alert(1)</script></p>
<a href="javascript:alert(1)">js</a><a href="http://ex.org/a">link</a>
<img src="http://tracker.example/p.gif" alt="pixel" onerror="x()">
<img src="cid:part1"><style>body{background:url(http://x)}</style>
<svg><script>alert(2)</script></svg><form action="http://x"><input name=a></form>
<iframe src="http://x"></iframe>"""


def test_sanitize_removes_script_vectors() -> None:
    out = sanitize_html(ATTACK)
    lowered = out.lower()
    for bad in (
        "<script",
        "onclick",
        "onerror",
        "javascript:",
        "<style",
        "<svg",
        "<form",
        "<input",
    ):
        assert bad not in lowered, bad
    assert "<iframe" not in lowered
    assert "Hi" in out


def test_sanitize_defers_remote_images_and_marks_links() -> None:
    out = sanitize_html(ATTACK)
    assert 'data-remote-src="http://tracker.example/p.gif"' in out
    assert ' src="http' not in out
    assert 'src="cid:part1"' in out
    assert 'rel="noopener noreferrer nofollow"' in out


def test_sanitize_image_attribute_with_angle_bracket() -> None:
    out = sanitize_html('<img alt="a>b" src="https://x.org/i.png">')
    assert 'data-remote-src="https://x.org/i.png"' in out and ' src="http' not in out


def test_html_to_text_structure() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body>"
        "<p>Hello&nbsp;<b>world</b> &amp; co<br>next</p>"
        "<ul><li>one</li><li>two <a href='http://x.org/a'>link</a></li></ul>"
        "<div>On Monday Bob wrote:</div>"
        "<blockquote><p>quoted</p><blockquote>deeper</blockquote></blockquote>"
        "<p><a href='mailto:a@b.org'>a@b.org</a></p><script>alert(1)</script></body></html>"
    )
    assert html_to_text(html) == (
        "Hello\xa0world & co\nnext\n\n- one\n- two link <http://x.org/a>\n\n"
        "On Monday Bob wrote:\n\n> quoted\n>\n> > deeper\n\na@b.org"
    )


def test_html_to_text_pre_keeps_lines() -> None:
    assert html_to_text("<pre>a\n  b\n</pre>after") == "a\n  b\n\nafter"


def test_deep_html_stays_fast_and_safe() -> None:
    html = "<div>" * 100_000 + "<script>x</script>deep"
    assert html_to_text(html) == "deep"
    out = sanitize_html(html)
    assert "deep" in out and "<script" not in out


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/=\"' abcdiv&;#xscriptonerlg:")), max_size=400))
def test_random_markup_never_breaks(html: str) -> None:
    out = sanitize_html(html)
    assert "<script" not in out.lower()
    assert isinstance(html_to_text(html), str)
