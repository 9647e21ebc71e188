"""`bridge access show ADDRESS [THREAD]` and `bridge audit`: checking who sees what.

`access show`, like `search --as` and `export --as`, answers as that person
would be answered by the viewer, and writes an audit entry first: looking at
the store through someone else's eyes is always on record.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any

from bridge.cli import open_engine, write_json
from bridge.config import Config
from bridge.core.access import Viewer, normalize_address, viewer_for
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `access` subcommand's arguments."""
    parser.add_argument("action", choices=["show"])
    parser.add_argument("address", metavar="ADDRESS", help="the person, e.g. alice@example.com")
    parser.add_argument("thread", nargs="?", metavar="THREAD", help="thread id or a Message-ID")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--limit", type=int, default=50, help="threads listed (default: 50)")


def local_actor() -> str:
    """Who ran the command: the user behind sudo, else the login name."""
    try:
        user = getpass.getuser()
    except OSError:
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def reader(address: str, config: Config) -> Viewer:
    """The viewer `address` would be when signed in, or a one-line error."""
    normal = normalize_address(address)
    local, at, domain = normal.rpartition("@")
    if not at or not local or not domain:
        raise BridgeError(f"{address!r} is not an email address")
    return viewer_for(normal, config.spaces, config.staff_domains)


def audit_reader(
    session: Session, viewer: Viewer, action: str, detail: str = "", *, actor: str | None = None
) -> None:
    """Put on record that `actor` looked at the store as `viewer`."""
    from bridge.store.visibility import audit

    audit.record(session, actor or local_actor(), action, viewer.address, detail)


def cmd_access(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    viewer = reader(args.address, config)
    engine = open_engine(args, config)
    with Session(engine) as session:
        audit_reader(session, viewer, "access.show", f"thread {args.thread}" if args.thread else "")
        if args.thread:
            return _show_thread(session, viewer, args.thread, as_json=args.json)
        return _show_threads(session, viewer, limit=args.limit, as_json=args.json)


def _describe(viewer: Viewer) -> str:
    spaces = ", ".join(sorted(viewer.spaces)) or "none"
    kind = "staff" if viewer.is_staff else "not staff"
    return f"{viewer.address} ({kind}; spaces read: {spaces})"


def _show_threads(session: Session, viewer: Viewer, *, limit: int, as_json: bool) -> int:
    from sqlalchemy import select

    from bridge.store.tables import Thread
    from bridge.store.visibility.access import thread_views, visible_thread_ids

    thread_ids = sorted(visible_thread_ids(session, viewer))
    views = thread_views(session, viewer, thread_ids)
    sizes: dict[int, int] = {}
    for start in range(0, len(thread_ids), 500):
        part = thread_ids[start : start + 500]
        query = select(Thread.id, Thread.message_count).where(Thread.id.in_(part))
        sizes.update((tid, count) for tid, count in session.execute(query))
    newest = sorted(views.values(), key=lambda v: (v.last_date is not None, v.last_date, v.id))
    newest.reverse()
    total_messages = sum(v.message_count for v in views.values())
    if as_json:
        write_json(
            sys.stdout,
            {
                "address": viewer.address,
                "staff": viewer.is_staff,
                "spaces": sorted(viewer.spaces),
                "threads": len(views),
                "messages": total_messages,
                "newest": [
                    {
                        "thread_id": v.id,
                        "subject": v.subject,
                        "last_date": v.last_date,
                        "visible_messages": v.message_count,
                        "thread_messages": sizes.get(v.id),
                    }
                    for v in newest[:limit]
                ],
            },
        )
        return 0
    out = sys.stdout
    out.write(f"{_describe(viewer)}\n")
    out.write(f"sees {total_messages} messages in {len(views)} threads\n")
    for v in newest[:limit]:
        date = f"{v.last_date:%Y-%m-%d}" if v.last_date else "????-??-??"
        size = sizes.get(v.id)
        of = f" of {size}" if size is not None and size != v.message_count else ""
        out.write(f"[{v.id}] {date}  {v.subject}  ({v.message_count}{of} messages)\n")
    if len(newest) > limit:
        out.write(f"... {len(newest) - limit} more (--limit)\n")
    return 0


def _show_thread(session: Session, viewer: Viewer, ident: str, *, as_json: bool) -> int:
    from bridge.store.read.reading import find_thread_id, thread_messages, thread_row
    from bridge.store.visibility.access import grant_reasons

    thread_id = find_thread_id(session, ident)
    thread = thread_row(session, thread_id)
    views = thread_messages(session, thread_id)
    reasons = grant_reasons(session, viewer, [v.pk for v in views])
    shown = sum(1 for v in views if reasons.get(v.pk))
    if as_json:
        rows: list[dict[str, Any]] = [
            {
                "pk": v.pk,
                "message_id": v.message_id,
                "date": v.date,
                "from": v.sender,
                "subject": v.subject,
                "visible": bool(reasons.get(v.pk)),
                "because": list(reasons.get(v.pk, ())),
            }
            for v in views
        ]
        write_json(
            sys.stdout,
            {"address": viewer.address, "thread_id": thread_id, "messages": rows},
        )
        return 0
    out = sys.stdout
    out.write(f"{_describe(viewer)}\n")
    out.write(f"[{thread_id}] {thread.subject}: sees {shown} of {len(views)} messages\n")
    for v in views:
        why = reasons.get(v.pk, ())
        mark = ", ".join(why) if why else "HIDDEN"
        date = f"{v.date:%Y-%m-%d %H:%M}" if v.date else "(no date)       "
        out.write(f"{'  ' * v.depth}{v.pk:>7} {date}  {v.sender or '-'}  [{mark}]\n")
    if not shown:
        out.write("(to this person the thread does not exist: its page is a 404)\n")
    return 0


def cmd_audit(args: argparse.Namespace, config: Config) -> int:
    from sqlalchemy.orm import Session

    from bridge.store.visibility import audit

    engine = open_engine(args, config)
    with Session(engine) as session:
        found = audit.entries(session, limit=args.limit, action=args.action)
    if args.json:
        write_json(
            sys.stdout,
            [
                {
                    "at": e.at,
                    "actor": e.actor,
                    "action": e.action,
                    "subject": e.subject,
                    "detail": e.detail,
                }
                for e in found
            ],
        )
        return 0
    for e in found:
        detail = f"  {e.detail}" if e.detail else ""
        sys.stdout.write(f"{e.at:%Y-%m-%d %H:%M:%S}Z  {e.actor}  {e.action}  {e.subject}{detail}\n")
    return 0
