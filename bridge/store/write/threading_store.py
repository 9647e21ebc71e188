"""Thread bookkeeping in the store: merging threads and rebuilding their trees.

The tree of a thread is a pure function of its members (`core.threads.build_tree`),
recomputed whenever the thread changes, so the result never depends on the
order in which messages arrived.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from bridge.core.linking.threads import ThreadMember, build_tree, thread_order
from bridge.core.message import Flag
from bridge.store.db import chunks
from bridge.store.tables import (
    FallbackLink,
    Message,
    MessageId,
    Person,
    Recipient,
    Thread,
    ThreadRedirect,
    table,
)


def merge_threads(session: Session, keep: int, others: list[int]) -> None:
    """Move every message of `others` into `keep`; old ids redirect to `keep`."""
    session.execute(update(Message).where(Message.thread_id.in_(others)).values(thread_id=keep))
    session.execute(
        update(ThreadRedirect).where(ThreadRedirect.new_id.in_(others)).values(new_id=keep)
    )
    session.execute(
        table(ThreadRedirect).insert(), [{"old_id": old, "new_id": keep} for old in others]
    )
    session.execute(delete(Thread).where(Thread.id.in_(others)))


def resolve_thread_id(session: Session, thread_id: int) -> int | None:
    """The current id of a thread, following redirects; None if unknown.

    One query whatever the answer, so a missing thread costs what a known one does.
    """
    current = select(Thread.id).where(Thread.id == thread_id).scalar_subquery()
    moved = select(ThreadRedirect.new_id).where(ThreadRedirect.old_id == thread_id)
    found = session.execute(select(func.coalesce(current, moved.scalar_subquery()))).scalar()
    return None if found is None else int(found)


def participants_conn(
    conn: Connection, pks: list[int]
) -> tuple[dict[int, frozenset[str]], dict[int, str]]:
    """Sender, To and Cc addresses of each message, and each sender's address."""
    found: dict[int, set[str]] = defaultdict(set)
    senders: dict[int, str] = {}
    for part in chunks(pks):
        for pk, address in conn.execute(
            select(Recipient.message_pk, Person.address)
            .join(Person, Person.id == Recipient.person_id)
            .where(Recipient.message_pk.in_(part), Recipient.kind != "bcc")
        ):
            found[pk].add(address)
        for pk, address in conn.execute(
            select(Message.id, Person.address)
            .join(Person, Person.id == Message.sender_id)
            .where(Message.id.in_(part))
        ):
            found[pk].add(address)
            senders[pk] = address
    return {pk: frozenset(addresses) for pk, addresses in found.items()}, senders


def member_from_row(
    row: Message,
    participant_set: frozenset[str] = frozenset(),
    aliases: tuple[str, ...] = (),
    sender: str = "",
    new_text: str = "",
    quoted_text: str = "",
) -> ThreadMember:
    references = tuple(row.references.split("\n")) if row.references else ()
    in_reply_to = tuple(row.in_reply_to.split("\n")) if row.in_reply_to else ()
    return ThreadMember(
        message_id=row.message_id,
        aliases=aliases,
        references=references,
        in_reply_to=in_reply_to,
        thread_index=row.thread_index,
        date=row.date,
        subject_norm=row.subject_norm,
        is_reply=row.is_reply,
        sender=sender,
        participants=participant_set,
        new_text=new_text,
        quoted_text=quoted_text,
        sent_local=row.sent_local,
    )


def rebuild_threads(session: Session, thread_ids: Iterable[int]) -> None:
    """Recompute parents and summary rows of these threads from their members.

    Loads all their members at once; single-message threads need no tree.
    """
    conn = session.connection()
    wanted = sorted(set(thread_ids))
    rows_by_thread: dict[int, list[Any]] = defaultdict(list)
    for part in chunks(wanted):
        for row in conn.execute(
            select(
                Message.id,
                Message.thread_id,
                Message.message_id,
                Message.references,
                Message.in_reply_to,
                Message.thread_index,
                Message.date,
                Message.sort_date,
                Message.sent_local,
                Message.subject,
                Message.subject_norm,
                Message.is_reply,
                Message.parent_id,
                Message.space,
                Message.private,
                Message.flags,
            ).where(Message.thread_id.in_(part))
        ):
            rows_by_thread[row.thread_id].append(row)
    multi = [pk for rows in rows_by_thread.values() if len(rows) > 1 for pk in (r.id for r in rows)]
    aliases: dict[int, list[str]] = defaultdict(list)
    links: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    for part in chunks(multi):
        for message_pk, alias in conn.execute(
            select(MessageId.message_pk, MessageId.message_id).where(MessageId.message_pk.in_(part))
        ):
            aliases[message_pk].append(alias)
        for child, parent, score in conn.execute(
            select(FallbackLink.child_pk, FallbackLink.parent_pk, FallbackLink.score).where(
                FallbackLink.child_pk.in_(part)
            )
        ):
            links[child].append((child, parent, score))
    parent_updates: list[dict[str, Any]] = []
    thread_updates: list[dict[str, Any]] = []
    for thread_id, rows in rows_by_thread.items():
        parents, root = _tree(rows, aliases, links)
        for row in rows:
            if parents.get(row.id) != row.parent_id:
                parent_updates.append({"pk": row.id, "parent": parents.get(row.id)})
        dates = [row.date for row in rows if row.date is not None]
        # The earliest message that a rule put in a space decides the thread's
        # space: a function of the members, so arrival order cannot change it.
        spaced = sorted((row.sort_date, row.id, row.space) for row in rows if row.space)
        thread_updates.append(
            {
                "tid": thread_id,
                "space": spaced[0][2] if spaced else None,
                "private": any(row.private for row in rows),
                "subject": root.subject,
                "root": root.message_id,
                "first": min(dates) if dates else None,
                "last": max(row.sort_date for row in (posts(rows) or rows)),
                "count": len(posts(rows)),
            }
        )
    messages = table(Message)
    threads = table(Thread)
    if parent_updates:
        conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("pk"))
            .values(parent_id=bindparam("parent")),
            parent_updates,
        )
    if thread_updates:
        conn.execute(
            update(threads)
            .where(threads.c.id == bindparam("tid"))
            .values(
                subject=bindparam("subject"),
                root_message_id=bindparam("root"),
                first_date=bindparam("first"),
                last_date=bindparam("last"),
                message_count=bindparam("count"),
                space=bindparam("space"),
                private=bindparam("private"),
            ),
            thread_updates,
        )


NOT_POSTS = {Flag.AUTO_REPLY, Flag.BOUNCE}


def posts(rows: list[Any]) -> list[Any]:
    """The members that are discussion posts: auto-replies and bounces are kept
    in the thread, flagged, but never counted as someone taking part."""
    return [row for row in rows if not NOT_POSTS.intersection(row.flags.split(","))]


def _tree(
    rows: list[Any],
    aliases: dict[int, list[str]],
    links: dict[int, list[tuple[int, int, float]]],
) -> tuple[dict[int, int | None], Any]:
    """(parent pk of each member, the root row shown first) for one thread."""
    if len(rows) == 1:
        return {rows[0].id: None}, rows[0]
    members = [
        ThreadMember(
            message_id=row.message_id,
            aliases=tuple(sorted(a for a in aliases.get(row.id, ()) if a != row.message_id)),
            references=tuple(row.references.split("\n")) if row.references else (),
            in_reply_to=tuple(row.in_reply_to.split("\n")) if row.in_reply_to else (),
            thread_index=row.thread_index,
            date=row.date,
            subject_norm=row.subject_norm,
            is_reply=row.is_reply,
            sender="",
            participants=frozenset(),
            new_text="",
            quoted_text="",
            sent_local=row.sent_local,
        )
        for row in rows
    ]
    id_of = {row.id: row.message_id for row in rows}
    fallback = [
        (id_of[child], id_of[parent], score)
        for row in rows
        for child, parent, score in links.get(row.id, ())
        if parent in id_of
    ]
    parent_ids = build_tree(members, fallback)
    pk_of = {row.message_id: row.id for row in rows}
    parents = {
        row.id: pk_of.get(parent_ids[row.message_id]) if parent_ids.get(row.message_id) else None
        for row in rows
    }
    order = thread_order(members, parent_ids)
    root_pk = pk_of[order[0][0]]
    return parents, next(row for row in rows if row.id == root_pk)


def thread_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Thread)).scalar_one()
