"""A digest as mail: subject line, plain text and HTML (jinja2), headers, one message.

The HTML is a table layout with inline styles (Outlook's Word engine ignores
most CSS), no images or outside resources, and colours readable in light and
dark mode; a `prefers-color-scheme` block darkens it where clients honour it.
Words come from `bridge.i18n` in the person's language.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import jinja2

from bridge.core.outgoing.digest import DigestContent, DigestItem, first_lines
from bridge.core.outgoing.reply import reply_subject
from bridge.core.outgoing.reply_address import make_token, reply_address
from bridge.i18n import Translate, format_datetime, translator
from bridge.outbound.compose import compose
from bridge.signing import DIGEST_REPLY, UNSUBSCRIBE, Signer

TEMPLATES = Path(__file__).parent / "templates"
THREAD_PATH = "/t/{id}"
SETTINGS_PATH = "/settings"
UNSUBSCRIBE_PATH = "/digest/unsubscribe"
FREQUENCY_PATH = "/digest/frequency"
SHOWN_AUTHORS = 3

_html = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_text = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=False,  # plain text: nothing is markup
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads the digest: what it is addressed to and written for."""

    address: str
    name: str
    language: str
    tz: ZoneInfo
    frequency: str


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str
    unsubscribe_url: str
    unsubscribe_token: str


def frequency_token(signer: Signer, address: str, frequency: str) -> str:
    """The signed token of a link that sets `address`'s digests to `frequency`."""
    return signer.sign(UNSUBSCRIBE, {"a": address, "f": frequency})


def read_frequency_token(signer: Signer, token: str) -> tuple[str, str] | None:
    """(address, frequency) from a token `frequency_token` made, or None."""
    payload = signer.unsign(UNSUBSCRIBE, token)
    if not isinstance(payload, dict):
        return None
    address, frequency = payload.get("a"), payload.get("f")
    if not isinstance(address, str) or frequency not in ("off", "daily", "weekly"):
        return None
    return address, str(frequency)


def subject_line(content: DigestContent, _: Translate) -> str:
    """Says what is inside: "Digest: 8 active discussions: 7 of yours, 1 in Sales team".

    The person's own threads and their spaces' are counted apart: a space
    names only the threads listed under it.
    """
    total = len(content.items)
    if total == 1:
        head = _("Digest: 1 active discussion")
    else:
        head = _("Digest: {count} active discussions").format(count=total)
    yours = len(content.yours)
    groups = content.space_counts
    named = [name for name, _count in groups if name]
    if not yours:
        if not named or len(named) < len(groups):
            return head
        return _("{digest} in {spaces}").format(digest=head, spaces=_spaces(named, _))
    if not groups:
        return head  # all of them the person's own: no space to name
    parts = [_("1 of yours") if yours == 1 else _("{count} of yours").format(count=yours)]
    # Two spaces by name; past that, the fullest by name and the rest counted.
    shown = [(n, c) for n, c in groups[: 2 if len(groups) <= 2 else 1] if n]
    rest = [(n, c) for n, c in groups if (n, c) not in shown]
    parts += [_("{count} in {space}").format(count=c, space=n) for n, c in shown]
    if len(rest) == 1:
        parts.append(_("{count} in another space").format(count=rest[0][1]))
    elif rest:
        parts.append(
            _("{count} in {spaces} other spaces").format(
                count=sum(c for _n, c in rest), spaces=len(rest)
            )
        )
    return _("{digest}: {parts}").format(digest=head, parts=", ".join(parts))


def _spaces(names: list[str], _: Translate) -> str:
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return _("{first} and {second}").format(first=names[0], second=names[1])
    return _("{first} and {count} other spaces").format(first=names[0], count=len(names) - 1)


ItemCache = dict[tuple[DigestItem, str, str], dict[str, str]]
ReplyAddress = Callable[[DigestItem], str | None]


def reply_addresses(signer: Signer, base: str, address: str, expires: date) -> ReplyAddress:
    """Each item's reply address for `address`: `base`'s `+r.<token>` sub-address.

    The token names the person, the item's newest message they may see (the
    one a reply answers) and its last valid day; see `core/outgoing/reply_address.py`.
    """

    def mac(data: bytes) -> bytes:
        return signer.mac(DIGEST_REPLY, data)

    def made(item: DigestItem) -> str | None:
        return reply_address(base, make_token(mac, item.newest_pk, address, expires))

    return made


def mailto(address: str, subject: str) -> str:
    """A `mailto:` URL (RFC 6068) to `address` with `subject`."""
    return f"mailto:{address}?{urlencode({'subject': subject}, quote_via=quote)}"


def render(
    content: DigestContent,
    reader: Reader,
    snippets: Mapping[int, str],
    base_url: str,
    signer: Signer,
    cache: ItemCache | None = None,
    reply: ReplyAddress | None = None,
) -> Rendered:
    """The subject, text and HTML of `content` for `reader`.

    `cache` keeps each thread's rendered lines by language and zone across
    the people of one run (most share the same threads); `reply` gives each
    thread's reply address for this reader (None: no reply links).
    """
    _ = translator(reader.language)
    base = base_url.rstrip("/")

    def link(path: str, frequency: str) -> str:
        token = frequency_token(signer, reader.address, frequency)
        return f"{base}{path}?{urlencode({'t': token})}"

    off = frequency_token(signer, reader.address, "off")
    unsubscribe = f"{base}{UNSUBSCRIBE_PATH}?{urlencode({'t': off})}"
    switch = [
        (_("Get it daily"), link(FREQUENCY_PATH, "daily")),
        (_("Get it weekly"), link(FREQUENCY_PATH, "weekly")),
    ]
    if reader.frequency == "daily":
        switch = switch[1:]
        frequency_line = _("You get this digest every day.")
    else:
        switch = switch[:1]
        frequency_line = _("You get this digest every week.")
    view = _item_view(reader, snippets, base, _)
    cache = {} if cache is None else cache

    def item(found: DigestItem) -> dict[str, str]:
        key = (found, reader.language, reader.tz.key)
        shown = cache.get(key)
        if shown is None:
            shown = cache[key] = view(found)
        address = reply(found) if reply is not None else None
        if address is None:
            return shown
        # Per reader, so never in the cache.
        link = mailto(address, reply_subject(found.subject))
        return {**shown, "reply": link, "reply_address": address}

    sections = [
        {"heading": heading, "threads": [item(i) for i in items]}
        for heading, items in (
            (_("Your discussions"), content.yours),
            (_("New and active in your spaces"), content.spaces),
        )
        if items
    ]
    context = {
        "_": _,
        "language": reader.language,
        "title": _("Your daily digest") if reader.frequency == "daily" else _("Your weekly digest"),
        "sections": sections,
        "frequency_line": frequency_line,
        "links": {
            "viewer": base + "/",
            "settings": base + SETTINGS_PATH,
            "unsubscribe": unsubscribe,
            "switch": switch,
        },
    }
    return Rendered(
        subject=subject_line(content, _),
        text=_text.get_template("digest.txt").render(context),
        html=_html.get_template("digest.html").render(context),
        unsubscribe_url=unsubscribe,
        unsubscribe_token=off,
    )


def _item_view(
    reader: Reader, snippets: Mapping[int, str], base: str, _: Translate
) -> Callable[[DigestItem], dict[str, str]]:
    def view(item: DigestItem) -> dict[str, str]:
        if item.new_count == 1:
            count = _("1 new message")
        else:
            count = _("{count} new messages").format(count=item.new_count)
        shown = ", ".join(item.authors[:SHOWN_AUTHORS])
        hidden = len(item.authors) - SHOWN_AUTHORS
        if hidden == 1:
            authors = _("{names} and 1 other").format(names=shown)
        elif hidden > 1:
            authors = _("{names} and {count} others").format(names=shown, count=hidden)
        else:
            authors = shown
        when = format_datetime(item.newest_date, reader.language, reader.tz, "short")
        parts = [item.space_name] if item.space_name else []
        if item.is_new:
            parts.append(_("new discussion"))
        parts += [count, _("from {authors}").format(authors=authors), when]
        return {
            "subject": item.subject.strip() or _("(no subject)"),
            "meta": " · ".join(parts),
            "snippet": first_lines(snippets.get(item.newest_pk, "")),
            "url": base + THREAD_PATH.format(id=item.thread_id),
        }

    return view


def digest_message(
    content: DigestContent,
    reader: Reader,
    snippets: Mapping[int, str],
    *,
    signer: Signer,
    base_url: str,
    from_address: str,
    message_id_domain: str,
    now: datetime,
    cache: ItemCache | None = None,
    reply: ReplyAddress | None = None,
) -> tuple[EmailMessage, bytes]:
    """The digest mail and its wire bytes (RFC 2369 list headers, RFC 8058 one-click)."""
    rendered = render(content, reader, snippets, base_url, signer, cache, reply)
    # The same signed token as the link: a mailed "unsubscribe" cannot be forged.
    mailto = f"mailto:{from_address}?subject={quote('unsubscribe ' + rendered.unsubscribe_token)}"
    headers = {
        "Precedence": "bulk",
        "List-Id": f"Bridge digest <digest.{message_id_domain}>",
        "List-Unsubscribe": f"<{rendered.unsubscribe_url}>, <{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return compose(
        from_address=from_address,
        from_name="Bridge",
        to_address=reader.address,
        to_name=reader.name,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id_domain=message_id_domain,
        now=now,
        extra_headers=headers,
    )
