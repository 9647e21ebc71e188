"""search: GIN indexes on the subject and new-text parts of the PostgreSQL tsvector

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:35:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The search reads "matches with a hit in the subject" and "... in new text";
# ts_filter(document, weight) keeps one field's lexemes, and a GIN index on it
# finds those hits without reading every matching document. SQLite's FTS5
# answers column filters from its own index, so it needs nothing here.
FIELDS = {"ix_message_search_subject": "a", "ix_message_search_new": "b"}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, weight in FIELDS.items():
        op.execute(
            f"CREATE INDEX {name} ON message_search USING gin (ts_filter(document, '{{{weight}}}'))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in FIELDS:
        op.execute(f"DROP INDEX {name}")
