"""A digest's subject says what is inside: the person's own threads and each space's, apart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.core.outgoing.digest import DigestContent, DigestItem
from bridge.i18n import translator
from bridge.outbound.digest_render import subject_line

WHEN = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def item(tid: int, space_name: str = "") -> DigestItem:
    return DigestItem(
        thread_id=tid,
        subject=f"Thread {tid}",
        space=space_name.lower().replace(" ", "-") or None,
        space_name=space_name,
        authors=("Alice",),
        new_count=1,
        newest_pk=tid,
        newest_date=WHEN,
        is_new=False,
    )


def content(yours: list[str], spaces: list[str]) -> DigestContent:
    """`yours` and `spaces`: the space name of each thread in either section."""
    mine = tuple(item(i, name) for i, name in enumerate(yours, 1))
    others = tuple(item(100 + i, name) for i, name in enumerate(spaces, 1))
    names = tuple(dict.fromkeys(i.space_name for i in mine + others if i.space_name))
    return DigestContent("bob@example.com", mine, others, names)


@pytest.mark.parametrize(
    ("yours", "spaces", "english", "french"),
    [
        # The case of the issue: 7 threads of their own (some in spaces), 1 in Sales.
        (
            ["", "", "", "", "", "Sales team", ""],
            ["Sales team"],
            "Digest: 8 active discussions: 7 of yours, 1 in Sales team",
            "Résumé : 8 discussions actives : 7 des vôtres, 1 dans Sales team",
        ),
        (
            ["Sales team"],
            ["Sales team", "Sales team", "Trading"],
            "Digest: 4 active discussions: 1 of yours, 2 in Sales team, 1 in Trading",
            "Résumé : 4 discussions actives : 1 des vôtres, 2 dans Sales team, 1 dans Trading",
        ),
        (
            ["", ""],
            ["Trading", "Trading", "Gas desk", "Legal", "Legal", "Legal"],
            "Digest: 8 active discussions: 2 of yours, 3 in Legal, 3 in 2 other spaces",
            "Résumé : 8 discussions actives : 2 des vôtres, 3 dans Legal, 3 dans 2 autres espaces",
        ),
        # All their own: no space is named, though some are in one.
        (
            ["Sales team", ""],
            [],
            "Digest: 2 active discussions",
            "Résumé : 2 discussions actives",
        ),
        (
            ["Sales team"],
            [],
            "Digest: 1 active discussion",
            "Résumé : 1 discussion active",
        ),
        # Only spaces: as before.
        (
            [],
            ["Trading", "Trading"],
            "Digest: 2 active discussions in Trading",
            "Résumé : 2 discussions actives dans Trading",
        ),
        (
            [],
            ["Trading", "Gas desk"],
            "Digest: 2 active discussions in Trading and Gas desk",
            "Résumé : 2 discussions actives dans Trading et Gas desk",
        ),
    ],
)
def test_the_subject_describes_what_is_inside(
    yours: list[str], spaces: list[str], english: str, french: str
) -> None:
    found = content(yours, spaces)
    assert subject_line(found, translator("en")) == english
    assert subject_line(found, translator("fr")) == french
