"""Admin pages: counts, quarantine (with retry), id collisions, rule hits, IMAP, the outbox.

Admins are the addresses in `web.admins`. For anyone else, signed in or
not, every page here answers the one 404 page: nothing tells that it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import pipeline
from bridge.errors import NotFoundError
from bridge.outbound import outbox
from bridge.store.bookkeeping import collisions, quarantine
from bridge.store.read.reading import raw_bytes
from bridge.store.tables import (
    ImapState,
    Message,
    Person,
    Quarantined,
    RawBlob,
    RuleHit,
    Skipped,
    Thread,
    User,
    WebSession,
)
from bridge.web.frame.context import is_admin, render
from bridge.web.frame.keys import config_of, now_of, store_of

# How much of a quarantined message the detail page shows, as text.
PREVIEW_BYTES = 64 * 1024


def require_admin(request: web.Request) -> None:
    if not is_admin(request):
        raise web.HTTPNotFound()


def _page(request: web.Request, name: str, context: dict[str, Any]) -> web.Response:
    response = render(request, name, context)
    response.headers["Cache-Control"] = "no-store"
    return response


# --- store reads --------------------------------------------------------------


def _count(session: Session, model: Any, *where: Any) -> int:
    return int(session.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def overview_counts(session: Session, now: datetime) -> dict[str, Any]:
    return {
        "messages": _count(session, Message),
        "threads": _count(session, Thread),
        "people": _count(session, Person),
        "quarantined": _count(session, Quarantined, Quarantined.released_at.is_(None)),
        "collisions": collisions.count_collisions(session),
        "skipped": _count(session, Skipped),
        "users": _count(session, User),
        "sessions": _count(session, WebSession, WebSession.expires_at > now),
        "outbox": outbox.counts(session),
    }


@dataclass(frozen=True, slots=True)
class HeldRow:
    id: int
    reason: str
    detail: str
    source: str
    location: str
    mailbox: str
    key: str
    envelope_from: str
    envelope_to: str
    created_at: datetime
    size: int


def _held(row: Quarantined, size: int) -> HeldRow:
    return HeldRow(
        row.id,
        row.reason,
        row.detail,
        row.source,
        row.location,
        row.mailbox,
        row.key,
        row.envelope_from or "",
        row.envelope_to,
        row.created_at,
        size,
    )


def held_rows(session: Session, limit: int = 500) -> tuple[list[HeldRow], dict[str, int]]:
    rows = quarantine.list_held(session, limit)
    shas = {row.raw_sha256 for row in rows}
    sizes = dict(
        session.execute(select(RawBlob.sha256, RawBlob.size).where(RawBlob.sha256.in_(shas))).all()
    )
    held = [_held(row, int(sizes.get(row.raw_sha256, 0))) for row in rows]
    return held, quarantine.counts_by_reason(session)


def held_item(session: Session, ident: int) -> tuple[HeldRow, str, bool] | None:
    """One held copy, a text preview of its bytes, and whether the preview is cut."""
    try:
        row = quarantine.get_held(session, ident)
    except NotFoundError:
        return None
    data = raw_bytes(session, row.raw_sha256)
    preview = data[:PREVIEW_BYTES].decode("utf-8", "replace")
    return _held(row, len(data)), preview, len(data) > PREVIEW_BYTES


def rule_rows(session: Session) -> tuple[list[tuple[str, int, datetime | None]], dict[str, int]]:
    hits = [
        (r.rule, int(r.hits), r.last_hit_at)
        for r in session.execute(
            select(RuleHit.rule, RuleHit.hits, RuleHit.last_hit_at).order_by(RuleHit.rule)
        )
    ]
    skipped = {
        rule: int(n)
        for rule, n in session.execute(
            select(Skipped.rule, func.count()).group_by(Skipped.rule).order_by(Skipped.rule)
        )
    }
    return hits, skipped


def imap_rows(session: Session) -> list[tuple[str, str, int, int, datetime]]:
    rows = session.execute(select(ImapState).order_by(ImapState.account, ImapState.folder))
    return [
        (r.account, r.folder, int(r.uidvalidity), int(r.last_uid), r.updated_at)
        for r in rows.scalars()
    ]


# --- pages ----------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    now = now_of(request)
    counts = await store_of(request).read(lambda s: overview_counts(s, now))
    return _page(request, "admin.html", {"counts": counts})


async def quarantine_list(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    held, reasons = await store_of(request).read(held_rows)
    context = {"held": held, "reasons": reasons, "retried": request.query.get("retried", "")}
    return _page(request, "admin_quarantine.html", context)


async def quarantine_item(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    ident = _ident(request)
    found = await store_of(request).read(lambda s: held_item(s, ident))
    if found is None:
        raise web.HTTPNotFound()
    row, preview, cut = found
    outcome = request.query.get("outcome", "")
    context = {"row": row, "preview": preview, "cut": cut, "outcome": outcome}
    return _page(request, "admin_quarantine_item.html", context)


async def quarantine_retry(request: web.Request) -> web.StreamResponse:
    """Run a held copy through the pipeline again, as `bridge quarantine retry ID` does."""
    require_admin(request)
    ident = _ident(request)
    now = now_of(request)
    rules = config_of(request).ruleset
    limits = config_of(request).limits.parse_limits()

    def retry(s: Session) -> str | None:
        try:
            outcome, reason = pipeline.retry_quarantined(s, ident, now, rules=rules, limits=limits)
        except NotFoundError:
            return None
        return f"{outcome.value}:{reason}" if reason else outcome.value

    result = await store_of(request).write(retry)
    if result is None:
        raise web.HTTPNotFound()
    if result.startswith("quarantined"):
        raise web.HTTPSeeOther(f"/admin/quarantine/{ident}?outcome={result}")
    raise web.HTTPSeeOther(f"/admin/quarantine?retried={ident}&outcome={result}")


async def collisions_page(request: web.Request) -> web.StreamResponse:
    """Messages stored apart because their Message-ID is held by other content."""
    require_admin(request)
    found = await store_of(request).read(collisions.list_collisions)
    return _page(request, "admin_collisions.html", {"collisions": found})


async def rules_page(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    hits, skipped = await store_of(request).read(rule_rows)
    seen = {rule for rule, _, _ in hits}
    idle = [rule.name for rule in config_of(request).rules if rule.name not in seen]
    return _page(request, "admin_rules.html", {"hits": hits, "idle": idle, "skipped": skipped})


async def imap_page(request: web.Request) -> web.StreamResponse:
    from bridge.web.app import STATUS  # the app module imports this one

    require_admin(request)
    checkpoints = await store_of(request).read(imap_rows)
    # IMAP accounts first, then the other sources (SMTP, the scheduler).
    live = sorted(
        ((name, dict(state)) for name, state in request.app[STATUS]().items()),
        key=lambda item: (not item[0].startswith("imap:"), item[0]),
    )
    accounts = [account.name for account in config_of(request).imap.accounts]
    context = {"checkpoints": checkpoints, "live": live, "accounts": accounts}
    return _page(request, "admin_imap.html", context)


async def outbox_page(request: web.Request) -> web.StreamResponse:
    require_admin(request)
    failed, counts = await store_of(request).read(lambda s: (outbox.failed(s), outbox.counts(s)))
    return _page(request, "admin_outbox.html", {"failed": failed, "counts": counts})


def _ident(request: web.Request) -> int:
    try:
        return int(request.match_info["ident"])
    except ValueError:
        raise web.HTTPNotFound() from None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin", overview)
    app.router.add_get("/admin/quarantine", quarantine_list)
    app.router.add_get(r"/admin/quarantine/{ident:\d+}", quarantine_item)
    app.router.add_post(r"/admin/quarantine/{ident:\d+}/retry", quarantine_retry)
    app.router.add_get("/admin/collisions", collisions_page)
    app.router.add_get("/admin/rules", rules_page)
    app.router.add_get("/admin/imap", imap_page)
    app.router.add_get("/admin/outbox", outbox_page)
