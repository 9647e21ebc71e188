"""HTML bodies: sanitise for the viewer (nh3), prepare them for a page, turn into plain text.

Two steps keep message HTML inert. `sanitize_html` runs once, at parse
time, and its output is what the store keeps: an allow-list of tags and
attributes, no script, event handler, style, form, frame, SVG or MathML,
links only to http, https, mailto (and cid for inline parts), no relative
URLs, and every image's address moved to `data-remote-src` so that showing
a message fetches nothing. `page_html` runs when a page is rendered: it
cleans again (rows stored under an older policy get today's), points
`cid:` images at their attachment URL, and, only when the reader asked,
gives remote images back their `src`. The page's Content-Security-Policy
(no inline script or style, img-src 'self' data:) is the second wall.

Styling from the mail is dropped entirely (no `style` attribute, no
<style>): CSS carries url() fetches and overlay tricks, and the CSP would
refuse inline styles anyway. Links get no `target`: they open in place,
with rel="noopener noreferrer nofollow".

`html_to_text` uses the stdlib tokenizer (`html.parser`): nh3 sanitises but
does not render text, and the tokenizer is linear and already in the stdlib.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape, unescape
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import nh3

from bridge.core.normalize import normalize_message_id

_TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "td": {"colspan", "rowspan", "align", "valign"},
    "th": {"colspan", "rowspan", "align", "valign"},
}
# Tags whose content goes too: it is code, or fallback shown only where
# the tag itself would have run.
_DROP_CONTENT = {
    "script", "style", "title", "head", "svg", "math", "form", "template", "noscript",
    "iframe", "object", "applet", "noembed", "noframes", "frameset", "video", "audio",
}  # fmt: skip
_URL_SCHEMES = {"http", "https", "mailto", "cid"}
_LINK_REL = "noopener noreferrer nofollow"
REMOTE_SRC = "data-remote-src"


def _cleaner(attributes: dict[str, set[str]]) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags=_DROP_CONTENT,
        attributes=attributes,
        url_schemes=_URL_SCHEMES,
        link_rel=_LINK_REL,
        strip_comments=True,
        # Relative and scheme-relative URLs ("/logout", "//host/p.gif") would
        # reach this server or another one without saying so.
        url_relative="deny",
    )


_STORE_CLEANER = _cleaner(_ATTRIBUTES)
# The page pass keeps the mark the stored pass left on deferred images.
_PAGE_CLEANER = _cleaner({**_ATTRIBUTES, "img": _ATTRIBUTES["img"] | {REMOTE_SRC}})

_MAX_DEPTH = 1000
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]{0,20})")
# Void elements and those the HTML parser closes by itself do not nest.
_FLAT = {
    "br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source",
    "embed", "param", "track", "p", "li", "td", "th", "tr", "option", "dt", "dd",
}  # fmt: skip

# nh3 re-serialises its output: every attribute value is double-quoted with
# '"' escaped, so these patterns see whole tags and whole values.
_IMG_TAG = re.compile(r'<img\b(?:\s+[^\s=>"/]+(?:="[^"]*")?)*\s*/?>')
_IMG_SRC = re.compile(r'\ssrc="([^"]*)"')
_IMG_REMOTE = re.compile(r'\sdata-remote-src="([^"]*)"')
_HTTP = re.compile(r"https?://[^\s]", re.IGNORECASE)
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")
_IPV6 = re.compile(r"[0-9a-f:.]{2,45}")


def _defer_src(match: re.Match[str]) -> str:
    """An image's address moves out of `src` (only `cid:` stays: no fetch);
    one that names no plain http(s) origin is dropped."""

    def move(src: re.Match[str]) -> str:
        value = unescape(src.group(1)).strip()
        if value[:4].lower() == "cid:":
            return src.group(0)
        if _origin(value) is None:
            return ""
        return f' {REMOTE_SRC}="{src.group(1).strip()}"'

    return _IMG_SRC.sub(move, match.group(0))


def _too_deep(html: str) -> bool:
    """Whether tags nest deeper than nh3 handles fast (its tree builder is
    quadratic in nesting depth: 100,000 nested divs take half a minute)."""
    if html.count("<") <= _MAX_DEPTH:
        return False
    depth = 0
    for match in _TAG.finditer(html):
        name = match.group(2).lower()
        if name in _FLAT:
            continue
        if match.group(1):
            depth = max(depth - 1, 0)
        else:
            depth += 1
            if depth > _MAX_DEPTH:
                return True
    return False


def _clean(html: str, cleaner: nh3.Cleaner) -> str:
    if _too_deep(html):
        # Degrade to the text, escaped: safe and still readable.
        return "<pre>" + escape(html_to_text(html)) + "</pre>"
    cleaned = cleaner.clean(html)
    if "<img" in cleaned:
        cleaned = _IMG_TAG.sub(_defer_src, cleaned)
    return cleaned


def sanitize_html(html: str) -> str:
    """Safe HTML to store: see the module docstring for what is kept."""
    return _clean(html, _STORE_CLEANER)


def page_html(
    stored: str, inline_images: Mapping[str, str] | None = None, remote_images: bool = False
) -> str:
    """The HTML a page shows for a stored body.

    `inline_images` maps a part's Content-ID (as the store keeps it) to the
    site-relative URL that serves it (`/a/<pk>/<position>`); a `cid:`
    image without one loses its `src` and shows its alt text. With
    `remote_images`, images whose deferred address is http(s) get it back
    as `src` (the page must then allow their origins: `remote_image_origins`).
    """
    cleaned = _clean(stored, _PAGE_CLEANER)
    if "<img" not in cleaned:
        return cleaned
    inline = inline_images or {}

    def fix(match: re.Match[str]) -> str:
        tag = _IMG_SRC.sub(lambda src: _inline_src(src, inline), match.group(0))
        return _IMG_REMOTE.sub(_restore_remote if remote_images else _check_remote, tag)

    return _IMG_TAG.sub(fix, cleaned)


def _inline_src(src: re.Match[str], inline: Mapping[str, str]) -> str:
    value = unescape(src.group(1)).strip()
    if value[:4].lower() != "cid:":
        return src.group(0)
    content_id = normalize_message_id(unquote(value[4:]))
    url = inline.get(content_id or "", "")
    # Only this site's own paths: a page never points an image elsewhere.
    if url.startswith("/") and not url.startswith("//"):
        return f' src="{escape(url)}"'
    return ""


def _check_remote(match: re.Match[str]) -> str:
    return match.group(0) if _origin(unescape(match.group(1))) else ""


def _restore_remote(match: re.Match[str]) -> str:
    if _origin(unescape(match.group(1))) is None:
        return ""
    return f' src="{match.group(1)}"'


def has_remote_images(html: str) -> bool:
    """Whether a stored or page body holds images that wait for the reader."""
    return f'{REMOTE_SRC}="' in html


def remote_image_origins(html: str) -> list[str]:
    """The origins (`https://host:port`) of the deferred images, sorted, each
    safe to write into a Content-Security-Policy source list."""
    found = (_origin(unescape(match.group(1))) for match in _IMG_REMOTE.finditer(html))
    return sorted({origin for origin in found if origin})


def _origin(url: str) -> str | None:
    """`scheme://host[:port]` of an http(s) URL whose host is a plain name or
    address, else None (such an image stays deferred)."""
    url = url.strip()
    if not _HTTP.match(url):
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host and ":" in host and _IPV6.fullmatch(host):
        host = f"[{host}]"
    elif not host or not _HOST.fullmatch(host):
        return None
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


_BLOCKS = {
    "p", "div", "section", "article", "header", "footer", "table", "tr", "ul",
    "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr",
    "address", "center", "form", "fieldset", "figure", "figcaption", "caption",
    "tbody", "thead", "tfoot", "nav", "aside", "main", "details", "summary",
}  # fmt: skip
_PARAGRAPHS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "pre", "ul", "ol", "dl"}
_SKIP = {"script", "style", "head", "title", "template", "svg", "noscript"}
_SPACES = re.compile(r"[ \t\r\n\f\u200b]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


class _TextMaker(HTMLParser):
    """Collects lines as (quote depth, text); one pass, no recursion."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []
        self.parts: list[str] = []
        self.quote = 0
        self.skip = 0
        self.pre = 0
        self.lists = 0
        self.links: list[tuple[str, int, int]] = []  # href, line number, part index
        self.line_no = 0

    def add(self, text: str) -> None:
        self.parts.append(text)

    def flush(self, blank: bool = False, br: bool = False) -> None:
        """End the current line; `blank` asks for a paragraph gap after it."""
        text = "".join(self.parts)
        self.parts = []
        self.line_no += 1
        if not self.pre:
            text = text.strip()
        if text or br:
            self.lines.append((self.quote, text))
        if blank and self.lines and self.lines[-1][1]:
            self.lines.append((self.quote, ""))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag == "br":
            self.flush(br=True)
        elif tag == "blockquote":
            self.flush(blank=True)
            self.quote += 1
        elif tag == "li":
            self.flush()
            self.add("  " * max(self.lists - 1, 0) + "- ")
        elif tag in ("td", "th"):
            self.add(" ")
        elif tag == "a":
            href = next((v for k, v in attrs if k == "href" and v), "")
            self.links.append((href, self.line_no, len(self.parts)))
        elif tag == "img":
            alt = next((v for k, v in attrs if k == "alt" and v), "")
            if alt:
                self.add(f" {alt} ")
        elif tag in _BLOCKS:
            self.flush(blank=tag in _PARAGRAPHS)
            if tag == "pre":
                self.pre += 1
            elif tag in ("ul", "ol"):
                self.lists += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "hr":
            self.flush(blank=True)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(self.skip - 1, 0)
        elif tag == "blockquote":
            self.flush()
            self.quote = max(self.quote - 1, 0)
            self.flush(blank=True)
        elif tag == "a" and self.links:
            href, line_no, start = self.links.pop()
            shown = "".join(self.parts[start:]).strip() if line_no == self.line_no else ""
            target = href[7:] if href.lower().startswith("mailto:") else href
            if target and target != shown and href.lower().startswith(("http", "mailto")):
                self.add(f" <{target}>")
        elif tag in _BLOCKS or tag == "li":
            if tag == "pre":
                self.pre = max(self.pre - 1, 0)
            elif tag in ("ul", "ol"):
                self.lists = max(self.lists - 1, 0)
            self.flush(blank=tag in _PARAGRAPHS)

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if not self.pre:
            data = _SPACES.sub(" ", data)
            if not self.parts or "".join(self.parts[-1:]).endswith(" "):
                data = data.lstrip(" ")
            self.add(data)
            return
        lines = data.split("\n")
        for line in lines[:-1]:
            self.add(line)
            self.flush()
        self.add(lines[-1])


def html_to_text(html: str) -> str:
    """Readable plain text: blocks and <br> end lines, list items start
    with "- ", blockquote lines with "> ", links read "text <url>",
    entities decoded, scripts and styles dropped."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    maker.flush()
    lines = maker.lines
    out = []
    for index, (depth, text) in enumerate(lines):
        if not text:
            # A gap belongs to the shallower side, so quotes end cleanly.
            after = lines[index + 1][0] if index + 1 < len(lines) else 0
            depth = min(depth, after)
        prefix = "> " * depth
        out.append((prefix + text).rstrip() if text else prefix.rstrip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip("\n")


# A cell holding more than this is prose laid out in a table, not data.
_MAX_CELL = 200
_MIN_ROWS = 2
_MIN_COLUMNS = 2


class _TableFinder(HTMLParser):
    """The cells of each table without a table inside it: rows of cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # Open tables, innermost last: [rows, has a table inside].
        self.open: list[tuple[list[list[str]], list[bool]]] = []
        self.cell: list[str] | None = None
        self.tables: list[list[list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            if self.open:
                self.open[-1][1][0] = True
            self.open.append(([], [False]))
            self.cell = None
        elif not self.open:
            return
        elif tag == "tr":
            if self.cell is not None:
                self._close_cell()
            self.open[-1][0].append([])
        elif tag in ("td", "th"):
            if self.cell is not None:
                self._close_cell()  # an unclosed cell ends where the next begins
            rows = self.open[-1][0]
            if not rows:
                rows.append([])
            self.cell = []
            rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.open and self.cell is not None:
            self._close_cell()
        elif tag == "table" and self.open:
            self._close_table()

    def finish(self) -> None:
        """Close what the markup left open."""
        self.close()
        while self.open:
            self._close_table()

    def _close_table(self) -> None:
        if self.cell is not None:
            self._close_cell()
        rows, nested = self.open.pop()
        if not nested[0]:
            self.tables.append(rows)

    def _close_cell(self) -> None:
        assert self.cell is not None
        rows = self.open[-1][0]
        rows[-1][-1] = _SPACES.sub(" ", "".join(self.cell)).strip()
        self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None and len(self.cell) < 1000:
            self.cell.append(data)


def _is_data_table(rows: list[list[str]]) -> bool:
    filled = [row for row in rows if sum(1 for cell in row if cell) >= _MIN_COLUMNS]
    cells = [cell for row in rows for cell in row]
    return len(filled) >= _MIN_ROWS and all(len(cell) <= _MAX_CELL for cell in cells)


def has_data_table(html: str, text: str = "") -> bool:
    """Whether the HTML holds a table of data that its plain text (`text`) flattened.

    A data table: two rows or more of two filled cells or more, no table
    inside it, no cell longer than a short sentence (newsletters lay out
    prose in tables; those read fine as text). With `text`, the table must
    also be in it (most of its cells), so a table only in quoted history
    that `text` left out does not count.
    """
    if "<t" not in html.lower():
        return False
    finder = _TableFinder()
    finder.feed(html)
    finder.finish()
    for rows in finder.tables:
        if not _is_data_table(rows):
            continue
        cells = [cell for row in rows for cell in row if cell]
        if not text or sum(1 for cell in cells if cell in text) * 2 >= len(cells):
            return True
    return False
