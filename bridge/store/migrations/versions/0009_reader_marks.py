"""reader marks: what each reader read of each thread, follow and mute, "mark all read"

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "thread_marks",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("thread_id", sa.Integer(), nullable=False),
        sa.Column("read_upto", sa.BigInteger(), nullable=False),
        sa.Column("watch", sa.String(length=8), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("address", "thread_id", name=op.f("pk_thread_marks")),
    )
    op.create_table(
        "reader_marks",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("read_upto", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_reader_marks")),
    )


def downgrade() -> None:
    op.drop_table("reader_marks")
    op.drop_table("thread_marks")
