"""A person first seen without a display name takes the name later mail gives them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.core.message import Provenance, RawMessage
from bridge.pipeline import Prepared, prepare, store_batch
from bridge.store.tables import Person
from tests.conftest import DATA

MAIL = DATA / "viewer" / "mail"
NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
BARE = "elpaso-1-info.eml"  # From: cynthia.franklin@elpaso.com
NAMED = "elpaso-2-followup.eml"  # From: "Franklin, Cynthia" <Cynthia.Franklin@ElPaso.com>


def item(name: str, data: bytes | None = None) -> Prepared:
    raw = data if data is not None else (MAIL / name).read_bytes()
    return prepare(RawMessage(raw, Provenance("file", f"test/{name}", name, name, None, ())))


def name_of(engine: Engine, address: str) -> str:
    with Session(engine) as session:
        return session.execute(select(Person.name).where(Person.address == address)).scalar_one()


@pytest.mark.parametrize("batches", [[[BARE], [NAMED]], [[BARE, NAMED]]], ids=["apart", "together"])
def test_the_name_of_later_mail_fills_a_bare_address(
    engine: Engine, batches: list[list[str]]
) -> None:
    for batch in batches:
        with Session(engine) as session, session.begin():
            store_batch(session, [item(name) for name in batch], NOW)
    assert name_of(engine, "cynthia.franklin@elpaso.com") == "Franklin, Cynthia"


def test_a_known_name_is_kept(engine: Engine) -> None:
    other = (
        (MAIL / NAMED)
        .read_bytes()
        .replace(b'"Franklin, Cynthia"', b'"Cindy F."')
        .replace(b"viewer-test-elpaso-followup", b"viewer-test-elpaso-other")
    )
    for batch in ([item(NAMED)], [item("other", other), item(BARE)]):
        with Session(engine) as session, session.begin():
            store_batch(session, batch, NOW)
    assert name_of(engine, "cynthia.franklin@elpaso.com") == "Franklin, Cynthia"
