"""`bridge rules test FILE.eml` and `bridge rules replay`: what the rules do, changing nothing."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bridge.config import Config
from bridge.core.admin_rules.rules import RuleSet, Trace, decide, trace
from bridge.core.mail.parse import ParseLimits, parse_message
from bridge.core.message import ParsedMessage, Provenance, RuleDecision
from bridge.errors import BridgeError, ParseError, RulesArgumentError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rules` subcommand's arguments."""
    parser.add_argument("action", choices=["test", "replay"])
    parser.add_argument("file", nargs="?", metavar="FILE.eml", help="test: the message")
    parser.add_argument(
        "--envelope-to", action="append", metavar="ADDR", help="test: as if delivered to ADDR"
    )
    parser.add_argument("--account", metavar="NAME", help="test: as if read from IMAP account")
    parser.add_argument("--since", metavar="DATE", help="replay: mail dated DATE or later")


def cmd_rules(args: argparse.Namespace, config: Config, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.action == "test":
        if not args.file:
            raise RulesArgumentError("rules test needs a message file (FILE.eml)")
        return rules_test(args, config, out)
    return rules_replay(args, config, out)


# -- test ----------------------------------------------------------------------


def rules_test(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesArgumentError(f"{path}: {exc.strerror or exc}") from None
    envelope = tuple(args.envelope_to or ())
    if args.account:
        provenance = Provenance("imap", args.account, envelope_to=envelope)
    elif envelope:
        provenance = Provenance("smtp", "rules-test", envelope_to=envelope)
    else:
        provenance = Provenance("file", str(path))
    try:
        parsed = parse_message(data, config.limits.parse_limits())
    except ParseError as exc:
        out.write(f"{path}: would be quarantined ({exc})\n")
        return 1
    write_trace(trace(config.ruleset, parsed, provenance), parsed, out)
    return 0


def write_trace(result: Trace, parsed: ParsedMessage, out: TextIO) -> None:
    out.write(f"message <{parsed.message_id or '?'}> {parsed.subject!r}\n")
    if parsed.flags:
        out.write(f"flags: {', '.join(sorted(parsed.flags))}\n")
    out.write(f"own mail: {result.own_mail or 'no'}\n")
    out.write(f"mail loop: {'yes: ' + result.loop if result.loop else 'no'}\n")
    if not result.rules:
        out.write("no rules in the config\n")
    for number, step in enumerate(result.rules, 1):
        verdict = "MATCH" if step.matched else "no match"
        if not step.reached:
            verdict += " (not reached: evaluation had ended)"
        out.write(f"rule {number} {step.rule.name}: {verdict} -> {step.rule.actions()}\n")
        for reason in step.reasons:
            out.write(f"    {reason}\n")
    out.write(f"outcome: {describe(result.decision, result.loop)}\n")


def describe(decision: RuleDecision, quarantine: str | None = None) -> str:
    if quarantine:
        return f"quarantined ({quarantine})"
    if decision.skip:
        return f"skipped by {decision.skip} (kept and counted, not bridged)"
    tags = ",".join(decision.tags) or "none"
    return (
        f"bridged; space={decision.space or 'none'} tags={tags} "
        f"private={'yes' if decision.private else 'no'}"
    )


# -- replay --------------------------------------------------------------------


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        try:
            value = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise RulesArgumentError(
                f"--since {text!r}: expected a date such as 2024-01-31"
            ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Replay:
    """What replaying the rules found: counted per copy, compared per message."""

    copies: int = 0  # stored copies (deliveries) of bridged messages
    messages: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    would_skip: Counter[str] = field(default_factory=Counter)  # rule -> stored copies
    would_quarantine: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0
    space_changes: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)
    tags_changed: int = 0
    private_changed: int = 0
    skipped_copies: int = 0  # copies a rule skipped when they arrived
    now_bridged: int = 0  # of those, copies that would now be bridged


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """One stored copy: its bytes, where it came from, and what was decided for its message."""

    message_pk: int | None  # None: a copy that was skipped (no message)
    data: bytes | None  # None when the raw bytes are missing
    provenance: Provenance
    space: str | None = None
    tags: tuple[str, ...] = ()
    private: bool = False


def replay(
    ruleset: RuleSet, copies: Iterator[StoredCopy], limits: ParseLimits | None = None
) -> Replay:
    """Run `decide` over stored copies (grouped by message, in order) and count the changes.

    The decisions of a message's copies combine as the store combines them:
    the first space, every tag, privacy if any copy is private.
    """
    result = Replay()
    limits = limits or ParseLimits()
    current: int | None = None
    decisions: list[RuleDecision] = []
    stored: StoredCopy | None = None
    for copy in copies:
        if copy.message_pk != current or copy.message_pk is None:
            _close(result, stored, decisions)
            current, stored, decisions = copy.message_pk, copy, []
        decision = _decide_copy(result, ruleset, copy, limits)
        if copy.message_pk is None:
            result.skipped_copies += 1
            stored = None
            if decision is not None and decision.skip is None:
                result.now_bridged += 1
        else:
            result.copies += 1
            if decision is not None:
                decisions.append(decision)
    _close(result, stored, decisions)
    return result


def _decide_copy(
    result: Replay, ruleset: RuleSet, copy: StoredCopy, limits: ParseLimits
) -> RuleDecision | None:
    if copy.data is None:
        result.unreadable += 1
        return None
    try:
        parsed = parse_message(copy.data, limits)
    except ParseError:
        result.unreadable += 1
        return None
    decision, failure = decide(ruleset, parsed, copy.provenance)
    result.hits.update(decision.hits)
    if failure is not None:
        result.would_quarantine[failure[0]] += copy.message_pk is not None
        return None
    if decision.skip is not None and copy.message_pk is not None:
        result.would_skip[decision.skip] += 1
    return decision


def _close(result: Replay, stored: StoredCopy | None, decisions: list[RuleDecision]) -> None:
    if stored is None:
        return
    result.messages += 1
    space: str | None = None
    tags: dict[str, None] = {}
    private = False
    for decision in decisions:
        if decision.skip is not None:
            continue
        space = space or decision.space
        tags.update(dict.fromkeys(decision.tags))
        private = private or decision.private
    if space != stored.space:
        result.space_changes[(stored.space, space)] += 1
    if set(tags) != set(stored.tags):
        result.tags_changed += 1
    if private != stored.private:
        result.private_changed += 1


def stored_copies(session: Session, since: datetime | None) -> Iterator[StoredCopy]:
    """Every stored delivery (by message) and then every skipped copy, from the store."""
    from sqlalchemy import select

    from bridge.store.read.reading import raw_bytes
    from bridge.store.tables import Delivery, Message, Skipped

    def data(sha: str) -> bytes | None:
        try:
            return raw_bytes(session, sha)
        except BridgeError:
            return None

    query = (
        select(Delivery, Message.space, Message.tags, Message.private)
        .join(Message, Message.id == Delivery.message_pk)
        .order_by(Delivery.message_pk, Delivery.id)
    )
    if since is not None:
        query = query.where(Message.sort_date >= since)
    for delivery, space, tags, private in session.execute(query.execution_options(yield_per=500)):
        provenance = Provenance(
            delivery.source,
            delivery.location,
            delivery.mailbox,
            delivery.key,
            delivery.envelope_from,
            tuple(a for a in delivery.envelope_to.split("\n") if a),
        )
        yield StoredCopy(
            delivery.message_pk,
            data(delivery.raw_sha256),
            provenance,
            space,
            tuple(t for t in tags.split(",") if t),
            bool(private),
        )
    skipped = select(Skipped).order_by(Skipped.id)
    if since is not None:
        skipped = skipped.where(Skipped.created_at >= since)
    for row in session.execute(skipped.execution_options(yield_per=500)).scalars():
        provenance = Provenance(row.source, row.location, row.mailbox, row.key)
        yield StoredCopy(None, data(row.raw_sha256), provenance)


def rules_replay(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    from sqlalchemy.orm import Session

    from bridge.cli import open_engine
    from bridge.store.bookkeeping import rule_hits

    since = parse_since(args.since)
    engine = open_engine(args, config)
    with Session(engine) as session:
        counted = rule_hits.counts(session.connection())
        result = replay(config.ruleset, stored_copies(session, since), config.limits.parse_limits())
        session.rollback()  # read only: nothing to keep
    write_replay(result, config.ruleset, counted, out)
    return 0


def write_replay(result: Replay, ruleset: RuleSet, counted: dict[str, int], out: TextIO) -> None:
    out.write(f"replayed {result.copies} copies of {result.messages} messages")
    out.write(f" and {result.skipped_copies} skipped copies (nothing was changed)\n")
    names = ["builtin:own-mail", *(rule.name for rule in ruleset.rules)]
    names += sorted(set(counted) - set(names))
    width = max(len(n) for n in names)
    out.write(f"{'rule':<{width}}  {'replay':>8}  {'counted':>8}\n")
    for name in names:
        out.write(f"{name:<{width}}  {result.hits[name]:>8}  {counted.get(name, 0):>8}\n")
    moved = sum(result.space_changes.values())
    out.write(f"messages that would change space: {moved}\n")
    for (old, new), n in sorted(result.space_changes.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        out.write(f"    {old or '(none)'} -> {new or '(none)'}: {n}\n")
    out.write(f"messages whose tags would change: {result.tags_changed}\n")
    out.write(f"messages whose privacy would change: {result.private_changed}\n")
    skipped = sum(result.would_skip.values())
    out.write(f"stored copies that would now be skipped: {skipped}\n")
    for rule, n in sorted(result.would_skip.items()):
        out.write(f"    {rule}: {n}\n")
    out.write(f"skipped copies that would now be bridged: {result.now_bridged}\n")
    if result.would_quarantine:
        loops = ", ".join(f"{k}: {v}" for k, v in sorted(result.would_quarantine.items()))
        out.write(f"stored copies that would now be quarantined: {loops}\n")
    if result.unreadable:
        out.write(f"copies that could not be read or parsed: {result.unreadable}\n")
