"""Languages and time zones: message catalogs, dates in the reader's zone.

English is the source language; `bridge/locale/<lang>/*.po` hold the
translations (read with Babel at first use; no compile step). Every part
of the bridge that speaks to people (the viewer, digests, sign-in mail)
takes its words from here, so a language is added in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as babel_format_date
from babel.dates import format_datetime as babel_format_datetime
from babel.messages.pofile import read_po

LANGUAGES = ("en", "fr")
LOCALE_DIR = Path(__file__).parent / "locale"

Translate = Callable[[str], str]


@cache
def catalog(language: str) -> dict[str, str]:
    """Every translated message of `language`, from all its .po files."""
    messages: dict[str, str] = {}
    folder = LOCALE_DIR / language
    for po in sorted(folder.glob("*.po")) if folder.is_dir() else ():
        with po.open("rb") as handle:
            for message in read_po(handle, locale=language):
                text, translated = message.id, message.string
                usable = isinstance(text, str) and isinstance(translated, str)
                if usable and text and translated and not message.fuzzy:
                    messages[str(text)] = str(translated)
    return messages


def translator(language: str) -> Translate:
    """`_` for `language`: the translation, or the English text when there is none."""
    messages = catalog(language) if language in LANGUAGES and language != "en" else {}
    return lambda text: messages.get(text, text)


def negotiate(accept_language: str, default: str = "en") -> str:
    """The best of LANGUAGES for an Accept-Language header (`fr-CH, en;q=0.8`)."""
    wanted: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag:
            wanted.append((-quality, position, tag.strip().replace("_", "-")))
    preferred = [tag for quality, _, tag in sorted(wanted) if quality < 0]
    found = Locale.negotiate(preferred, list(LANGUAGES), sep="-") if preferred else None
    return str(found) if found else default


def zone(name: str, fallback: str = "UTC") -> ZoneInfo:
    """The time zone called `name`, or `fallback` when the name is unknown."""
    for candidate in (name, fallback, "UTC"):
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def local_datetime(value: datetime, tz: ZoneInfo) -> datetime:
    """`value` (UTC when naive, as the store keeps it) in the reader's zone."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(tz)


def format_datetime(value: datetime, language: str, tz: ZoneInfo, form: str = "medium") -> str:
    """A date and time as a reader of `language` in zone `tz` writes it."""
    return _format_datetime(value, language, tz, form)


# Babel takes some 50 µs a date; a thread page shows dozens, readers reread them.
@lru_cache(maxsize=16384)
def _format_datetime(value: datetime, language: str, tz: ZoneInfo, form: str) -> str:
    local = local_datetime(value, tz)
    return babel_format_datetime(local, form, tzinfo=tz, locale=_locale(language))


def format_date(value: datetime, language: str, tz: ZoneInfo, form: str = "medium") -> str:
    return babel_format_date(local_datetime(value, tz).date(), form, locale=_locale(language))


def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language if language in LANGUAGES else "en")
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def timezone_names() -> Iterable[str]:
    """Zone names offered in settings, sorted."""
    return sorted(_zone_names())


def is_zone_name(name: str) -> bool:
    """Whether `name` is a zone of the zone database (`America/Chicago`, `UTC`)."""
    return name in _zone_names()


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones() - {"Factory", "localtime"})
