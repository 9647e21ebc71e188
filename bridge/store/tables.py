"""The schema: SQLAlchemy 2 models, the same on SQLite and PostgreSQL.

Search index tables differ by dialect (FTS5 on SQLite, a tsvector table on
PostgreSQL) and are created by the migrations, not declared here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite keeps no zone, so it is put back on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RawBlob(Base):
    """The original bytes of one copy of a message, compressed, by sha256."""

    __tablename__ = "raw_messages"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class CompressionDict(Base):
    """zstd dictionaries trained on this store's mail; blobs name theirs by id."""

    __tablename__ = "compression_dicts"

    dict_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(Text, default="")


class Thread(Base):
    """A discussion. Ids are permanent: a merged thread's old id redirects."""

    __tablename__ = "threads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    root_message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    first_date: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_date: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    space: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class ThreadRedirect(Base):
    __tablename__ = "thread_redirects"

    old_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    new_id: Mapped[int] = mapped_column(Integer)


class Message(Base):
    """One distinct message, however many copies of it were delivered."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("raw_messages.sha256"))
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    date: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    sort_date: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    sent_local: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    sender_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    subject_norm: Mapped[str] = mapped_column(Text, default="")
    # new text, quoted history, signature and sanitised HTML, compressed (store.blobs)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    references: Mapped[str] = mapped_column(Text, default="")  # ids, one per line
    in_reply_to: Mapped[str] = mapped_column(Text, default="")  # ids, one per line
    thread_index: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    conversation: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    is_reply: Mapped[bool] = mapped_column(Boolean, default=False)
    has_attachment: Mapped[bool] = mapped_column(Boolean, default=False)
    list_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    flags: Mapped[str] = mapped_column(Text, default="")  # sorted, comma-separated
    # What the admin rules decided: the space, tags (sorted, comma-separated),
    # and whether only the message's participants may see it.
    space: Mapped[str | None] = mapped_column(String(100), nullable=True)
    tags: Mapped[str] = mapped_column(Text, default="", server_default="")
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Indexed: each stored batch numbers its messages from max(arrival) + 1.
    arrival: Mapped[int] = mapped_column(BigInteger, default=0, index=True)

    __table_args__ = (
        Index("ix_messages_subject_norm_sort_date", "subject_norm", "sort_date"),
        # The access rule's space arm: a reader's open space messages by index alone.
        Index("ix_messages_space_private_thread_id", "space", "private", "thread_id", "sort_date"),
    )


class MessageId(Base):
    """Every Message-ID a message is known by: its own and its aliases."""

    __tablename__ = "message_ids"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the table: no second index

    message_id: Mapped[str] = mapped_column(String(998), primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)


class ContentHash(Base):
    """Content hashes (sender, date, subject, body) of the copies seen."""

    __tablename__ = "content_hashes"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the table: no second index

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"))


class Reference(Base):
    """One id a message's References/In-Reply-To name: finds waiting children and ghosts."""

    __tablename__ = "message_refs"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the table: no second index

    # Keyed by the id named first: "who names this id?" is the only question asked.
    ref_id: Mapped[str] = mapped_column(String(998), primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)


class FallbackLink(Base):
    """A reply link found without headers (subject + participants + quoted text)."""

    __tablename__ = "fallback_links"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the table: no second index

    child_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    parent_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    score: Mapped[float] = mapped_column()


class Recipient(Base):
    __tablename__ = "recipients"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the table: no second index

    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # to, cc, bcc
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)


class EnvelopeRecipient(Base):
    """A person a delivery of the message was addressed to (RCPT TO, Delivered-To).

    Kept apart from the deliveries' text column so the access rule finds a
    reader's threads through an index instead of reading every delivery.
    """

    __tablename__ = "envelope_recipients"

    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True, index=True)


class Attachment(Base):
    __tablename__ = "attachments"

    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    content_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class Delivery(Base):
    """One copy of a message seen at one source: who got it, and where it came from."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("raw_messages.sha256"))
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str] = mapped_column(Text, default="")
    key: Mapped[str] = mapped_column(Text)
    envelope_from: Mapped[str | None] = mapped_column(Text, nullable=True)
    envelope_to: Mapped[str] = mapped_column(Text, default="")  # addresses, one per line
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("source", "key", name="uq_deliveries_source_key"),)


class CopyOfSource:
    """Where a copy that was not stored as a message came from, and its bytes."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    raw_sha256: Mapped[str] = mapped_column(ForeignKey("raw_messages.sha256"))
    source: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str] = mapped_column(Text, default="")
    key: Mapped[str] = mapped_column(Text)


class Quarantined(CopyOfSource, Base):
    """A copy that could not be stored, with its bytes and the reason."""

    __tablename__ = "quarantine"

    envelope_from: Mapped[str | None] = mapped_column(Text, nullable=True)
    envelope_to: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # `store-failed` copies are retried by the scheduler: tries so far, and when next.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)

    __table_args__ = (UniqueConstraint("source", "key", name="uq_quarantine_source_key"),)


class ImportedFile(Base):
    """Import checkpoint: a file (or maildir message) fully stored, by size and mtime."""

    __tablename__ = "imported_files"
    __table_args__ = {"sqlite_with_rowid": False}  # the key is the table: no second index

    path: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    messages: Mapped[int] = mapped_column(Integer, default=0)


class ImapState(Base):
    """IMAP checkpoint: committed in the same transaction as the messages it covers."""

    __tablename__ = "imap_state"

    account: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RuleHit(Base):
    """How often each admin rule matched (copies counted once each)."""

    __tablename__ = "rule_hits"

    rule: Mapped[str] = mapped_column(String(200), primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hit_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Skipped(CopyOfSource, Base):
    """A copy a rule said not to bridge: its bytes are kept, and it is counted."""

    __tablename__ = "skipped"

    message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    rule: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("source", "key", name="uq_skipped_source_key"),)


def table(model: type[Base]) -> Table:
    """The Core table of a model, for bulk statements."""
    return cast(Table, model.__table__)


class Outbox(Base):
    """Mail the bridge sends: the exact bytes, enqueued with what caused them.

    The bytes are sent unchanged on every attempt, so a retry keeps its
    Message-ID. A claimed row carries a lease: a sender that crashed holds
    it only until `lease_until`.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(998), default="")
    recipients: Mapped[str] = mapped_column(Text)  # one address a line
    data: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)


class Secret(Base):
    """Keys the bridge makes for itself on first use (cookie and link signing).

    Kept in the database so every process sharing it signs alike and a
    restart does not sign everybody out.
    """

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    """A person who signed in or gets digests: their own settings.

    Empty strings mean "the default": the browser's language, the
    configured time zone, the digest frequency of their spaces.
    `feed_epoch` is part of their signed feed token: bumping it revokes
    every feed URL they handed out.
    """

    __tablename__ = "users"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    language: Mapped[str] = mapped_column(String(8), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="")
    digest_frequency: Mapped[str] = mapped_column(String(8), default="")  # ""|off|daily|weekly
    feed_epoch: Mapped[int] = mapped_column(Integer, default=0)
    last_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LoginToken(Base):
    """A sign-in link: only the SHA-256 of its token is stored; single use."""

    __tablename__ = "login_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(64), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebSession(Base):
    """A signed-in browser. The cookie carries the id, signed; only its hash is stored."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    via: Mapped[str] = mapped_column(String(16), default="link")  # link | sso
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DigestSend(Base):
    """One digest per person and period: the row is claimed before anything is sent.

    `period` names the period in the person's calendar ("daily:2026-11-27",
    "weekly:2026-W48"); the unique key is what makes a second daemon, or a
    restart after `kill -9`, skip a digest already claimed.
    """

    __tablename__ = "digest_sends"
    __table_args__ = (UniqueConstraint("address", "period", name="uq_digest_sends_address_period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    period: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # queued | empty | skipped | failed
    threads: Mapped[int] = mapped_column(Integer, default=0)
    outbox_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Something an admin did or looked at that others may need to account for.

    `actor` is who did it (a signed-in admin's address, or the local user
    who ran a command), `action` a short name (`access.show`,
    `search.as`), `subject` what it was about (an address, a thread).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(998), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class StoreTask(Base):
    """Progress of a data step that runs after a schema upgrade, in committed batches.

    A step killed halfway resumes from `position`; `done` is set once it has
    covered the whole store.
    """

    __tablename__ = "store_tasks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ThreadMark(Base):
    """One reader's marks on one thread: how far they read it, and follow or mute.

    `read_upto` is the `messages.arrival` of the newest message they may see
    that they had when they last opened the thread: what arrived after it is
    unread. `watch` is "" (nothing said), "follow" or "mute".
    """

    __tablename__ = "thread_marks"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    thread_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    read_upto: Mapped[int] = mapped_column(BigInteger, default=0)
    watch: Mapped[str] = mapped_column(String(8), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReaderMark(Base):
    """A reader's marks on everything: "mark all read", and a version for kept pages.

    `read_upto`: every message that arrived up to it is read, in any thread.
    `version` moves with every change of the reader's marks (here or in
    `thread_marks`), so a page kept for them is never shown with old ones.
    """

    __tablename__ = "reader_marks"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    read_upto: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
