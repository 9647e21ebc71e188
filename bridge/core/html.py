"""HTML bodies: sanitise for the viewer (nh3), turn into plain text.

`html_to_text` uses the stdlib tokenizer (`html.parser`): nh3 sanitises but
does not render text, and the tokenizer is linear and already in the stdlib.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

import nh3

_TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
_ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "td": {"colspan", "rowspan", "align", "valign"},
    "th": {"colspan", "rowspan", "align", "valign"},
    "font": set(),
}
_DROP_CONTENT = {"script", "style", "title", "head", "svg", "math", "form", "template"}
_URL_SCHEMES = {"http", "https", "mailto", "cid", "tel"}
_LINK_REL = "noopener noreferrer nofollow"

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
_REMOTE_SRC = re.compile(r'\ssrc="(?=https?:)', re.IGNORECASE)


def _hide_remote(match: re.Match[str]) -> str:
    return _REMOTE_SRC.sub(' data-remote-src="', match.group(0))


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


def sanitize_html(html: str) -> str:
    """Safe HTML for the viewer.

    No script, event handlers, javascript: URLs, style/svg vectors or forms;
    remote images keep their URL in `data-remote-src` so nothing is fetched
    until the reader asks; links get rel="noopener noreferrer nofollow".
    """
    if _too_deep(html):
        # Degrade to the text, escaped: safe and still readable.
        return "<pre>" + escape(html_to_text(html)) + "</pre>"
    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_DROP_CONTENT,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel=_LINK_REL,
        strip_comments=True,
    )
    if "<img" in cleaned:
        cleaned = _IMG_TAG.sub(_hide_remote, cleaned)
    return cleaned


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
