"""The command line: shared options work before and after the command."""

from __future__ import annotations

import pytest

from bridge.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--db", "x.db", "--config", "b.toml", "search", "budget"],
        ["search", "--db", "x.db", "--config", "b.toml", "budget"],
        ["--db", "x.db", "search", "--config", "b.toml", "budget"],
    ],
)
def test_shared_options_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.db, args.config, args.query) == ("x.db", "b.toml", ["budget"])
    assert args.debug is False


def test_no_options_leave_the_defaults() -> None:
    args = build_parser().parse_args(["digest", "preview", "--to", "bob@example.com"])
    assert (args.db, args.config, args.debug) == (None, None, False)
