"""The one path every message takes: keep, parse, (rules), dedupe, thread, split, store.

Every source (file import, SMTP/LMTP, IMAP) hands `RawMessage`s to this
module; nothing else writes messages. The CPU-heavy, pure half (`prepare`)
can run in worker processes; the storing half runs on the one writer, in one
transaction per batch, and the caller commits it together with its own
checkpoint (import progress, IMAP UID), so a source is acknowledged only
once the raw bytes are durable.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bridge.core.admin_rules.rules import RuleSet, decide
from bridge.core.body.quotes import split_reply
from bridge.core.linking import dedupe
from bridge.core.mail.parse import ParseLimits, parse_message
from bridge.core.message import Flag, ParsedMessage, RawMessage, RuleDecision, SplitText
from bridge.errors import ParseError
from bridge.store.blobs import Body, Compressor
from bridge.store.db import is_transient

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    STORED = "stored"  # a new message
    MERGED = "merged"  # another copy of a message already stored
    SEEN = "seen"  # this very copy was stored before (re-import)
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"  # a rule said not to bridge it: bytes kept, counted


@dataclass(frozen=True, slots=True)
class Prepared:
    """A raw message after the pure stages, ready for the writer."""

    raw: RawMessage
    sha256: str
    compressed: bytes
    parsed: ParsedMessage | None = None
    split: SplitText | None = None
    content_hash: str | None = None
    message_id: str | None = None
    body: bytes = b""  # new text, quoted text, signature, html: compressed (store.blobs)
    decision: RuleDecision = field(default_factory=RuleDecision)
    failure: tuple[str, str] | None = None  # (reason, detail): goes to quarantine


@dataclass
class Tally:
    """What a run did, for the summary line and the metrics."""

    outcomes: Counter[str] = field(default_factory=Counter)
    quarantine_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome, reason: str | None = None) -> None:
        self.outcomes[outcome.value] += 1
        if reason:
            self.quarantine_reasons[reason] += 1

    @property
    def read(self) -> int:
        return sum(self.outcomes.values())


def prepare(
    raw: RawMessage,
    compressor: Compressor | None = None,
    limits: ParseLimits | None = None,
    rules: RuleSet | None = None,
) -> Prepared:
    """Parse, split, hash and compress one raw message: no I/O, safe in worker processes.

    Never raises for bad input: a failure becomes `Prepared.failure` so that
    the writer quarantines the bytes with the reason.
    """
    compressor = compressor or Compressor()
    sha256 = hashlib.sha256(raw.data).hexdigest()
    compressed = compressor.compress(raw.data)
    try:
        parsed = parse_message(raw.data, limits or ParseLimits())
    except ParseError as exc:
        return Prepared(raw, sha256, compressed, failure=(exc.reason, exc.detail))
    except Exception as exc:  # a parser bug must not stop an import: quarantine it
        log.exception("parse failed on %s", raw.provenance.key)
        return Prepared(raw, sha256, compressed, failure=("parse-failed", _describe(exc)))
    decision = RuleDecision()
    if rules is not None:
        decision, refused = decide(rules, parsed, raw.provenance)
        if refused is not None:
            return Prepared(raw, sha256, compressed, failure=refused)
    try:
        split = split_reply(parsed.text)
        chash = dedupe.content_hash(parsed)
    except Exception as exc:
        log.exception("<%s> split failed", parsed.message_id)
        return Prepared(raw, sha256, compressed, failure=("split-failed", _describe(exc)))
    message_id = parsed.message_id or dedupe.synthetic_message_id(chash)
    if parsed.message_id is None:
        parsed = _with_flag(parsed, Flag.NO_MESSAGE_ID)
    body = compressor.pack_body(
        Body(split.new_text, split.quoted_text, split.signature, parsed.html), raw.data
    )
    return Prepared(
        raw, sha256, compressed, parsed, split, chash, message_id, body=body, decision=decision
    )


def _with_flag(parsed: ParsedMessage, flag: str) -> ParsedMessage:
    return replace(parsed, flags=parsed.flags | {flag})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def store_batch(
    session: Session, items: list[Prepared], now: datetime, tally: Tally | None = None
) -> list[Outcome]:
    """Store prepared messages in the caller's transaction; the caller commits.

    If the batch fails as a whole, the caller rolls back and stores its
    messages one by one (`store_each`), so one bad message is quarantined
    and the rest go on.
    """
    from bridge.store.write.messages import BatchWriter

    writer = BatchWriter(session, now)
    outcomes = writer.store(items)
    if tally is not None:
        for outcome, reason in zip(outcomes, writer.reasons, strict=True):
            tally.add(outcome, reason)
    return outcomes


def retry_quarantined(
    session: Session,
    row_id: int,
    now: datetime,
    compressor: Compressor | None = None,
    rules: RuleSet | None = None,
    limits: ParseLimits | None = None,
) -> tuple[Outcome, str | None]:
    """Run a quarantined copy through the pipeline again (after a fix or an upgrade).

    Returns the outcome and, when it is still quarantined, the reason.
    """
    from sqlalchemy import update

    from bridge.store.bookkeeping import quarantine
    from bridge.store.tables import Quarantined

    row = quarantine.get_held(session, row_id)
    item = prepare(quarantine.raw_message(session, row), compressor, limits, rules=rules)
    if item.failure is not None:
        reason, detail = item.failure
        session.execute(
            update(Quarantined).where(Quarantined.id == row.id).values(reason=reason, detail=detail)
        )
        return Outcome.QUARANTINED, reason
    quarantine.release(session, row, now)
    outcome = store_batch(session, [item], now)[0]
    if outcome is Outcome.QUARANTINED:
        session.execute(
            update(Quarantined).where(Quarantined.id == row.id).values(released_at=None)
        )
        return outcome, "store-failed"
    return outcome, None


def store_alone(engine: Engine, item: Prepared, now: datetime, tally: Tally) -> Outcome:
    """Store one message in its own transaction; if even that fails, quarantine it."""
    try:
        with Session(engine) as session, session.begin():
            outcome = store_batch(session, [item], now, tally)[0]
        return outcome
    except Exception as exc:
        if is_transient(exc):
            raise
        log.exception("<%s> store failed", item.message_id)
        failed = replace(item, failure=("store-failed", _describe(exc)))
        with Session(engine) as session, session.begin():
            return store_batch(session, [failed], now, tally)[0]
