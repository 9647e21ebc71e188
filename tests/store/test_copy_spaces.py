"""Copies of one message that rules put in different spaces: the same space in either order.

ann's copy matches a rule for "deals", bob's a rule for "news". Which copy
arrives first must not decide where the message lives, and so who reads it.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bridge.config import parse_config
from bridge.core.message import Provenance, RawMessage
from bridge.pipeline import Outcome, Tally, prepare, store_alone
from bridge.store.tables import Message

CONFIG = """
[[spaces]]
slug = "deals"
members = ["x@example.org"]
[[spaces]]
slug = "news"
members = ["y@example.org"]
[[rules]]
name = "ann-mail"
space = "news"
[rules.match]
envelope_to = ["ann@example.com"]
[[rules]]
name = "bob-mail"
space = "deals"
[rules.match]
envelope_to = ["bob@example.com"]
"""

DATA = (
    b"Message-ID: <one@example.com>\r\nFrom: cat@example.com\r\n"
    b"To: ann@example.com, bob@example.com\r\nSubject: Quarterly numbers\r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\nThe numbers are in.\r\n"
)


@pytest.mark.parametrize("first", ["ann@example.com", "bob@example.com"])
def test_the_space_does_not_depend_on_which_copy_came_first(engine: Engine, first: str) -> None:
    rules = parse_config(tomllib.loads(CONFIG), "bridge.toml").ruleset
    order = [first, *({"ann@example.com", "bob@example.com"} - {first})]
    outcomes = [
        store_alone(
            engine,
            prepare(
                RawMessage(DATA, Provenance("smtp", "test", key=rcpt, envelope_to=(rcpt,))),
                rules=rules,
            ),
            datetime(2026, 3, 2, 10, 1, tzinfo=UTC),
            Tally(),
        )
        for rcpt in order
    ]
    assert outcomes == [Outcome.STORED, Outcome.MERGED]
    with Session(engine) as session:
        assert session.execute(select(Message.space)).scalar_one() == "deals"
