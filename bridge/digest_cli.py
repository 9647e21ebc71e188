"""`bridge digest preview --to ADDRESS` and `bridge digest send [--to ADDRESS] [--now]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.config import Config
from bridge.errors import DigestArgumentError, OutputError
from bridge.outbound.compose import verify
from bridge.outbound.digest_run import prepare, run, sender
from bridge.outbound.digests import QUEUED, plan
from bridge.outbound.keys import signing_key
from bridge.signing import Signer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `digest` subcommand's arguments."""
    parser.add_argument("action", choices=["preview", "send"])
    parser.add_argument("--to", metavar="ADDRESS", help="only this person (preview: required)")
    parser.add_argument("--html", metavar="FILE", help="preview: also write the HTML part here")
    parser.add_argument(
        "--now", action="store_true", help="send: do not wait for the send hour of the period"
    )
    parser.add_argument(
        "--at",
        metavar="DATETIME",
        help="act as if it were this time (ISO 8601, UTC unless it names a zone)",
    )


def cmd_digest(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    from bridge.cli import open_engine

    out = out or sys.stdout
    engine = open_engine(args, config)
    now = _moment(args.at) if args.at else datetime.now(UTC)
    if args.action == "preview":
        if not args.to:
            raise DigestArgumentError("digest preview needs --to ADDRESS")
        return preview(engine, config, args.to, args.html, now, out)
    return send(engine, config, args.to, args.now, now, out)


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DigestArgumentError(f"--at {text!r}: not an ISO 8601 date and time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def preview(
    engine: Engine, config: Config, address: str, html: str | None, now: datetime, out: TextIO
) -> int:
    """Print what `address` would get now (headers and plain text); change nothing else."""
    sender(config)
    with Session(engine) as session, session.begin():
        signer = Signer(signing_key(session, config, now))
    with Session(engine) as session:
        found = plan(session, config, now, only=address, preview=True)
        items = prepare(session, config, found, found.due, signer, keep_messages=True)
    if not items:
        out.write(f"{address}: gets no digest\n")
        return 0
    item = items[0]
    if item.message is None or item.status != QUEUED:
        reason = item.detail or "nothing new they may see: an empty digest is not sent"
        out.write(f"{address}: no digest ({item.status}): {reason}\n")
        return 0
    message = item.message
    for name, value in message.items():
        out.write(f"{name}: {value}\n")
    text = message.get_body(("plain",))
    out.write("\n" + (text.get_content() if text is not None else ""))
    if html:
        part = message.get_body(("html",))
        body = part.get_content() if part is not None else ""
        try:
            Path(html).write_text(body, encoding="utf-8")
        except OSError as exc:
            raise OutputError(html, exc) from None
    verify(message)
    return 0


def send(
    engine: Engine, config: Config, only: str | None, force: bool, now: datetime, out: TextIO
) -> int:
    """Claim and enqueue every due digest (or one person's), then deliver the outbox."""
    report = run(engine, config, now, only=only, force=force)
    counts = report.counts
    out.write(
        f"due {report.due}: queued {counts.get(QUEUED, 0)}, empty {counts.get('empty', 0)}, "
        f"failed {counts.get('failed', 0)}, already claimed {counts.get('taken', 0)}\n"
    )
    for address in report.unsubscribed:
        out.write(f"unsubscribed by mail: {address}\n")
    for address, reason in report.failures:
        out.write(f"not sent to {address}: {reason}\n")
    if config.outbound.host and counts.get(QUEUED, 0):
        sent = asyncio.run(_deliver(engine, config, now))
        out.write(f"delivered {sent[0]}, to retry {sent[1]}, failed {sent[2]}\n")
    return 1 if report.failures else 0


async def _deliver(engine: Engine, config: Config, now: datetime) -> tuple[int, int, int]:
    from bridge.outbound.mailer import Mailer
    from bridge.store.runner import StoreRunner

    store = StoreRunner(engine)
    mailer = Mailer(store, config.outbound, config.bridge.address)
    total = [0, 0, 0]
    try:
        while True:
            counts = await mailer.send_due(now)
            total = [total[0] + counts.sent, total[1] + counts.retried, total[2] + counts.failed]
            if not (counts.sent or counts.failed or counts.retried):
                return total[0], total[1], total[2]
    finally:
        store.close()
