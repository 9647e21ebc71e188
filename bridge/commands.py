"""The handlers behind each `bridge` subcommand: thin, printing for people or JSON."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bridge.cli import open_engine, utcnow, write_json
from bridge.config import Config
from bridge.errors import ConfigError, OutputError


@contextmanager
def _output(path: str | None, binary: bool = False) -> Iterator[Any]:
    if path is None or path == "-":
        yield sys.stdout.buffer if binary else sys.stdout
        return
    try:
        handle = open(path, "wb" if binary else "w", encoding=None if binary else "utf-8")  # noqa: SIM115
    except OSError as exc:
        raise OutputError(path, exc) from None
    with handle:
        yield handle


def cmd_import(args: argparse.Namespace, config: Config) -> int:
    from tqdm import tqdm

    from bridge.ingest.files import run_import
    from bridge.ingest.owners import Owners, load_owners

    owners = Owners(
        tuple(dict.fromkeys(args.owner)),
        load_owners(args.owners) if args.owners else {},
        mapped=bool(args.owners),
    )
    engine = open_engine(args, config, create=True)
    bar = tqdm(
        total=0,
        unit="msg",
        disable=args.quiet or (not sys.stderr.isatty() and not _force_progress()),
        dynamic_ncols=True,
        smoothing=0.1,
    )

    def set_total(total: int) -> None:
        bar.total = total
        bar.refresh()

    interrupts: list[int] = []

    def on_interrupt(signum: int, frame: object) -> None:
        if interrupts:  # a second Ctrl-C: stop now; the batch in flight rolls back
            raise KeyboardInterrupt
        interrupts.append(signum)
        sys.stderr.write("\nbridge: finishing the current batch (Ctrl-C again to stop now)\n")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = run_import(
            engine,
            args.paths,
            workers=args.workers or config.imports.workers,
            batch_size=config.imports.batch_size,
            rules=config.ruleset,
            limits=config.limits.parse_limits(),
            owners=owners,
            stop=lambda: bool(interrupts),
            progress=bar.update,
            on_total=set_total,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    tally = result.tally
    rate = tally.read / result.seconds if result.seconds > 0 else 0.0
    out = sys.stdout
    out.write(
        f"read {tally.read} messages from {result.files_total} files "
        f"({result.files_skipped} already imported) in {result.seconds:.1f}s "
        f"({rate:.0f} msg/s)\n"
    )
    out.write(
        f"stored {tally.outcomes['stored']}, merged as duplicates {tally.outcomes['merged']}, "
        f"already stored {tally.outcomes['seen']}, skipped by rules {tally.outcomes['skipped']}, "
        f"quarantined {tally.outcomes['quarantined']}\n"
    )
    for reason, count in sorted(tally.quarantine_reasons.items()):
        out.write(f"  quarantined ({reason}): {count}\n")
    if owners and not result.interrupted:
        out.write(f"owners recorded on {result.owners_recorded} copies already stored\n")
    for mailbox in result.unowned:
        sys.stderr.write(f"bridge: warning: {args.owners} has no owner for mailbox {mailbox!r}\n")
    if result.interrupted:
        sys.stderr.write("bridge: interrupted; run the same command again to resume\n")
        return 130
    return 0


def _force_progress() -> bool:
    import os

    return os.environ.get("BRIDGE_PROGRESS") == "1"


def cmd_search(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    from bridge.access_cli import audit_reader, reader
    from bridge.core.search_language.snippets import PLAIN_MARK, split_marks
    from bridge.search import search

    viewer = reader(args.as_address, config) if args.as_address else None
    engine = open_engine(args, config)
    query = " ".join(args.query)
    with Session(engine) as session:
        if viewer is not None:
            audit_reader(session, viewer, "search.as", query)
        if args.json:
            mark = PLAIN_MARK
        else:
            mark = ("\x1b[1m", "\x1b[0m") if sys.stdout.isatty() else ("[", "]")
        results = search(
            session,
            query,
            limit=args.limit,
            offset=args.offset,
            viewer=viewer,
            mark=mark,
            escape=False,
        )
        if args.json:
            snippets = [split_marks(hit.snippet) for hit in results.hits]
            write_json(
                sys.stdout,
                {
                    "query": query,
                    "total_threads": results.total_threads,
                    "hints": list(results.hints),
                    "threads": [
                        {
                            "thread_id": hit.thread_id,
                            "subject": hit.subject,
                            "message_id": hit.message_id,
                            "date": hit.date,
                            "from": hit.sender,
                            # Plain text, and where the query matched in it.
                            "snippet": snippet,
                            "snippet_hits": [list(hit_span) for hit_span in hits],
                            "score": hit.score,
                            "matching_messages": hit.matches,
                            "thread_messages": hit.thread_messages,
                        }
                        for hit, (snippet, hits) in zip(results.hits, snippets, strict=True)
                    ],
                },
            )
            return 0
    for hint in results.hints:
        sys.stderr.write(f"hint: {hint}\n")
    zone = ZoneInfo(config.web.default_timezone)
    for hit in results.hits:
        date = hit.date.astimezone(zone).strftime("%Y-%m-%d") if hit.date else "????-??-??"
        sys.stdout.write(
            f"[{hit.thread_id}] {date}  {hit.subject}  "
            f"({hit.matches}/{hit.thread_messages} messages)\n"
            f"    {hit.sender}  <{hit.message_id}>\n"
            f"    {' '.join(hit.snippet.split())}\n"
        )
    shown = len(results.hits)
    sys.stdout.write(f"{shown} of {results.total_threads} threads\n")
    return 0


def cmd_thread(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    from bridge.store.read.reading import find_thread_id, thread_messages, thread_row

    engine = open_engine(args, config)
    with Session(engine) as session:
        thread_id = find_thread_id(session, args.ident)
        thread = thread_row(session, thread_id)
        views = thread_messages(session, thread_id)
    if args.json:
        write_json(
            sys.stdout,
            {
                "thread_id": thread_id,
                "subject": thread.subject,
                "messages": [
                    {
                        "message_id": v.message_id,
                        "parent_id": v.parent_message_id,
                        "depth": v.depth,
                        "date": v.date,
                        "from": v.sender,
                        "subject": v.subject,
                        "new_text": v.new_text,
                        "flags": list(v.flags),
                    }
                    for v in views
                ],
            },
        )
        return 0
    sys.stdout.write(f"[{thread_id}] {thread.subject}  ({len(views)} messages)\n")
    zone = ZoneInfo(config.web.default_timezone)
    for view in views:
        # In [web] default_timezone, and saying so: a bare 14:00 is read as local time.
        date = (
            view.date.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if view.date else "(no date)"
        )
        first = next((line.strip() for line in view.new_text.splitlines() if line.strip()), "")
        who = view.sender_name or view.sender
        sys.stdout.write(f"{'  ' * view.depth}{date}  {who}: {first[:100]}\n")
    return 0


def cmd_raw(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    from bridge.store.read.reading import find_message, raw_bytes

    engine = open_engine(args, config)
    with Session(engine) as session:
        message = find_message(session, args.message_id)
        data = raw_bytes(session, message.raw_sha256)
    with _output(args.output, binary=True) as out:
        out.write(data)
    return 0


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    from bridge.access_cli import audit_reader, reader
    from bridge.store.read.export import export_raw, export_rows

    viewer = reader(args.as_address, config) if args.as_address else None
    engine = open_engine(args, config)
    with Session(engine) as session:
        if viewer is not None:
            audit_reader(session, viewer, "export.as", args.format)
        if args.format == "jsonl":
            with _output(args.output) as out:
                for row in export_rows(session, viewer):
                    write_json(out, row)
        else:
            with _output(args.output, binary=True) as out:
                for data in export_raw(session, viewer):
                    out.write(mbox_entry(data))
    return 0


def mbox_entry(data: bytes) -> bytes:
    """One message in mboxrd form: From_ line, >From-quoted body lines, blank line."""
    import re

    body = re.sub(rb"(?m)^(>*From )", rb">\1", data.replace(b"\r\n", b"\n"))
    if not body.endswith(b"\n"):
        body += b"\n"
    return b"From bridge@localhost Thu Jan  1 00:00:00 1970\n" + body + b"\n"


def cmd_quarantine(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    from bridge import pipeline
    from bridge.errors import BridgeError
    from bridge.store.bookkeeping import quarantine
    from bridge.store.read.reading import raw_bytes

    engine = open_engine(args, config)
    with Session(engine) as session:
        if args.action == "list":
            rows = quarantine.list_held(session, limit=10_000)
            for row in rows:
                sys.stdout.write(
                    f"{row.id}\t{row.created_at:%Y-%m-%d %H:%M}\t{row.reason}\t{row.key}\n"
                )
            counts = quarantine.counts_by_reason(session)
            summary = ", ".join(f"{reason}: {count}" for reason, count in counts.items())
            sys.stdout.write(f"{len(rows)} quarantined{' (' + summary + ')' if summary else ''}\n")
            return 0
        if args.action == "show":
            if args.ident is None:
                raise BridgeError("quarantine show needs an ID (see `bridge quarantine list`)")
            row = quarantine.get_held(session, args.ident)
            data = raw_bytes(session, row.raw_sha256)
            if args.output:
                with _output(args.output, binary=True) as out:
                    out.write(data)
                return 0
            sys.stdout.write(
                f"id: {row.id}\nreason: {row.reason}\ndetail: {row.detail}\n"
                f"source: {row.source} {row.location}\nmailbox: {row.mailbox}\n"
                f"key: {row.key}\nsize: {len(data)} bytes\n"
                f"quarantined: {row.created_at:%Y-%m-%d %H:%M:%S}\n\n"
            )
            sys.stdout.write(data[:2000].decode("utf-8", "replace"))
            sys.stdout.write("\n")
            return 0
        if args.ident is None and not args.all:
            raise BridgeError("quarantine retry needs an ID or --all")
        ids = (
            [args.ident]
            if args.ident is not None
            else [r.id for r in quarantine.list_held(session, 1_000_000)]
        )
    failed = 0
    for ident in ids:
        with Session(engine) as session, session.begin():
            outcome, reason = pipeline.retry_quarantined(
                session, ident, utcnow(), rules=config.ruleset, limits=config.limits.parse_limits()
            )
        if reason:
            failed += 1
        sys.stdout.write(f"{ident}: {outcome.value}{' (' + reason + ')' if reason else ''}\n")
    return 1 if failed and args.ident is not None else 0


def cmd_collisions(args: argparse.Namespace, config: Config) -> int:
    """`bridge collisions list|show PK`: copies stored apart for an id held by other content."""
    from sqlalchemy.orm import Session

    from bridge.errors import BridgeError
    from bridge.store.bookkeeping import collisions

    def when(value: datetime | None) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value else "-"

    engine = open_engine(args, config)
    with Session(engine) as session:
        if args.action == "list":
            found = collisions.list_collisions(session, limit=10_000)
            for c in found:
                held = ",".join(str(pk) for pk in c.holders) or "-"
                sys.stdout.write(
                    f"{c.pk}\t{when(c.date)}\t{c.stored_id}\theld by {held}\t{c.subject}\n"
                )
            sys.stdout.write(f"{len(found)} id collisions\n")
            return 0
        if args.ident is None:
            raise BridgeError("collisions show needs a PK (see `bridge collisions list`)")
        c = collisions.get_collision(session, args.ident)
    sys.stdout.write(
        f"pk: {c.pk}\nstored id: {c.stored_id}\nreal id: {' '.join(c.real_ids)}\n"
        f"held by: {' '.join(str(pk) for pk in c.holders) or '-'}\n"
        f"date: {when(c.date)}\nsender: {c.sender}\nsubject: {c.subject}\n"
    )
    for copy in c.copies:
        sys.stdout.write(f"copy: {copy.source} {copy.location} {copy.mailbox} {copy.key}\n")
    return 0


def cmd_db(args: argparse.Namespace, config: Config) -> int:
    from bridge.store.migrate import current_revision, upgrade

    engine = open_engine(args, config, upgrade=False, create=args.action == "upgrade")
    if args.action == "upgrade":
        upgrade(engine)
    sys.stdout.write(f"schema revision: {current_revision(engine)}\n")
    return 0


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from bridge.daemon import run_daemon

    return run_daemon(args, config)


def cmd_login_link(args: argparse.Namespace, config: Config) -> int:
    """A one-time sign-in link for ADDRESS, printed instead of mailed.

    For the first admin of a new install, or when no relay is configured
    yet: whoever can run this can read the database anyway.
    """
    from sqlalchemy.orm import Session

    from bridge.store.db import shown_url
    from bridge.web.account.auth_store import create_login_token

    address = args.address.strip().lower()
    if "@" not in address:
        raise ConfigError(
            "(command line)", "ADDRESS", f"has value {args.address!r}: not an address"
        )
    engine = open_engine(args, config)
    with Session(engine) as session, session.begin():
        token = create_login_token(session, address, "command-line", utcnow())
    sys.stdout.write(f"{config.web.public_url}/login/confirm?t={token}\n")
    # The viewer must read the same database: name it, so a mismatch shows.
    where = shown_url(args.db or config.database.url)
    sys.stderr.write(f"stored in {where}; valid for 15 minutes, once; open it and press Sign in\n")
    return 0
