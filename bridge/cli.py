"""The `bridge` command line. Errors become one line on stderr (a traceback with --debug)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge import __version__
from bridge.config import Config, load_config
from bridge.errors import BridgeError

log = logging.getLogger("bridge")

Handler = Callable[[argparse.Namespace, Config], int]

# The config file when --config is not given.
CONFIG_ENV = "BRIDGE_CONFIG"


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    from bridge.logs import setup_logging

    setup_logging(debug=args.debug, quiet=getattr(args, "quiet", False))
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    if getattr(args, "config", None) is None:
        # Every command, and `bridge run` under systemd, reads the same file.
        args.config = os.environ.get(CONFIG_ENV) or None
    try:
        config = load_config(args.config)
        return int(args.handler(args, config))
    except BridgeError as exc:
        if args.debug:
            raise
        print(f"bridge: error: {exc}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except KeyboardInterrupt:
        print("bridge: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, or the database: still one line, a traceback with --debug
        if args.debug:
            raise
        from bridge.store.db import is_transient

        if is_transient(exc):
            print(f"bridge: error: the database failed: {one_line(exc)}", file=sys.stderr)  # noqa: T201
            return 75  # EX_TEMPFAIL: try again later
        print(  # noqa: T201
            f"bridge: internal error: {one_line(exc)} (run with --debug for details)",
            file=sys.stderr,
        )
        return 70
    finally:
        for engine in getattr(args, "engines", ()):
            engine.dispose()


def one_line(exc: BaseException) -> str:
    """The exception's type and first line; a database error's own, never its SQL or values."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(cause).__name__}: {first}"[:300]


def _common_options(default: Any) -> CommandParser:
    common = CommandParser(add_help=False)
    common.add_argument("--db", metavar="URL", help="database URL or SQLite file path")
    common.add_argument(
        "--config",
        metavar="FILE",
        help=f"bridge.toml (default: ${CONFIG_ENV}, else the built-in defaults)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    if default is argparse.SUPPRESS:
        for action in common._actions:
            action.default = argparse.SUPPRESS
    return common


# The search options that take a value: the words after them are not the query.
_SEARCH_VALUED = frozenset({"--as", "--limit", "--offset", "--db", "--config"})


class CommandParser(argparse.ArgumentParser):
    """argparse, whose errors about a search query starting with `-` (`-acme`, taken
    for an option) say to put the query after `--`. `words` is the command line."""

    words: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        super().error(message + dash_query_hint(self.words, message))


def dash_query_hint(words: Sequence[str], message: str) -> str:
    """`; put the query after --: bridge search -- -acme` for `bridge search -acme`, or ''."""
    if "search" not in words or not ("unrecognized" in message or "query" in message):
        return ""
    after = list(words)[list(words).index("search") + 1 :]
    options: list[str] = []
    query: list[str] = []
    taking_value = False
    for word in after:
        if taking_value or (word.startswith("--") and word != "--"):
            options.append(word)
            taking_value = not taking_value and word in _SEARCH_VALUED
        elif word != "--":
            query.append(word)
    if not any(word.startswith("-") for word in query):
        return ""
    suggestion = " ".join(["bridge", "search", *options, "--", *query])
    return "; a query word starting with - is read as an option: put the query after --: " + (
        suggestion
    )


def build_parser(words: Sequence[str] = ()) -> argparse.ArgumentParser:
    # The options go before or after the command; after it they must not
    # reset what was given before it, so there they have no defaults.
    common = _common_options(argparse.SUPPRESS)
    parser = CommandParser(
        prog="bridge",
        description="Company email turned into threaded, searchable discussions.",
        parents=[_common_options(None)],
    )
    parser.words = words
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.words = words
        p.set_defaults(handler=handler)
        return p

    from bridge import access_cli, commands, rules_cli

    p = command("import", commands.cmd_import, "import mbox, maildir, .eml and message folders")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--workers", type=int, help="parser processes (default: 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--owner",
        action="append",
        type=owner_address,
        default=[],
        metavar="ADDRESS",
        help="ADDRESS received every copy imported (repeatable)",
    )
    p.add_argument(
        "--owners",
        metavar="FILE",
        help='TOML table of mailbox = address(es), e.g. allen-p = "phillip.allen@enron.com"',
    )

    p = command("search", commands.cmd_search, "search stored mail, results by thread")
    p.add_argument("query", nargs="+", help="words and operators; after -- when one starts with -")
    p.add_argument(
        "--as",
        dest="as_address",
        metavar="ADDRESS",
        help="only what ADDRESS may see, as the viewer would answer them (audited)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--offset", type=int, default=0)

    p = command("thread", commands.cmd_thread, "show a thread as a tree")
    p.add_argument("ident", metavar="ID", help="thread id or any Message-ID in it")
    p.add_argument("--json", action="store_true")

    p = command("raw", commands.cmd_raw, "write a message's original bytes")
    p.add_argument("message_id", metavar="MESSAGE_ID")
    p.add_argument("-o", "--output", metavar="FILE")

    p = command("export", commands.cmd_export, "export every message as JSON lines or mbox")
    p.add_argument("--format", choices=["jsonl", "mbox"], default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument(
        "--as",
        dest="as_address",
        metavar="ADDRESS",
        help="only the messages ADDRESS may see, as their copies (audited)",
    )

    p = command("quarantine", commands.cmd_quarantine, "list, show or retry quarantined mail")
    p.add_argument("action", choices=["list", "show", "retry"])
    p.add_argument("ident", nargs="?", type=int, metavar="ID")
    p.add_argument("--all", action="store_true", help="retry: every quarantined message")
    p.add_argument("-o", "--output", metavar="FILE", help="show: write the raw bytes here")

    p = command(
        "collisions",
        commands.cmd_collisions,
        "list or show messages stored apart because their Message-ID is held by other content",
    )
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("ident", nargs="?", type=int, metavar="PK")

    p = command(
        "access",
        access_cli.cmd_access,
        "show what a person may see: their threads, or a thread message by message and why",
    )
    access_cli.add_arguments(p)

    p = command("audit", access_cli.cmd_audit, "list the audit log, newest first")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--action", metavar="NAME", help="only this action, e.g. access.show")
    p.add_argument("--json", action="store_true")

    p = command(
        "rules", rules_cli.cmd_rules, "test the rules on a message, or replay them over stored mail"
    )
    rules_cli.add_arguments(p)

    from bridge import digest_cli

    p = command("digest", digest_cli.cmd_digest, "preview or send the digests by email")
    digest_cli.add_arguments(p)

    p = command("login-link", commands.cmd_login_link, "print a one-time sign-in link")
    p.add_argument("address", metavar="ADDRESS")

    p = command("db", commands.cmd_db, "database schema")
    p.add_argument("action", choices=["upgrade", "current"])

    p = command("run", commands.cmd_run, "run the daemon (SMTP and web)")
    return parser


def owner_address(value: str) -> str:
    """An `--owner` argument: a lower-case address (argparse exits 2 otherwise)."""
    from bridge.config import owner_problem

    problem = owner_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{value!r}: {problem}")
    return value


def open_engine(
    args: argparse.Namespace, config: Config, *, upgrade: bool = True, create: bool = False
) -> Engine:
    """The database engine for a command, with the schema brought up to date.

    Only the commands that put mail in (`run`, `import`, `db upgrade`) pass
    `create`: the others, given a database that does not exist or holds no
    Bridge schema, raise `DatabaseMissing` rather than answer from an empty one.
    """
    from sqlalchemy.exc import OperationalError

    from bridge.errors import DatabaseMissing
    from bridge.store.db import make_engine, shown_url
    from bridge.store.migrate import current_revision, is_current
    from bridge.store.migrate import upgrade as run_upgrade

    url = args.db or config.database.url
    engine = make_engine(url, create=create)
    # Closed by `main` once the command is done.
    args.__dict__.setdefault("engines", []).append(engine)
    if not create:
        try:
            revision = current_revision(engine)
        except OperationalError as exc:
            # PostgreSQL refuses the connection (no SQLSTATE is given to a
            # client that is not connected yet): the server's own words.
            if f'database "{engine.url.database}" does not exist' in str(exc.orig):
                engine.dispose()
                raise DatabaseMissing(shown_url(url)) from None
            raise
        if revision is None:
            engine.dispose()
            raise DatabaseMissing(shown_url(url), "no Bridge database there (no schema)")
    if upgrade and not is_current(engine):
        run_upgrade(engine)
    return engine


def utcnow() -> datetime:
    return datetime.now(UTC)


def write_json(out: TextIO, value: Any) -> None:
    json.dump(value, out, ensure_ascii=False, default=_json_default)
    out.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def session_for(engine: Engine) -> Session:
    return Session(engine)
