"""messages.arrival index: the next arrival number is read with max(), once per stored batch

Without it, `max(arrival)` reads the whole messages table (bodies included)
for every live delivery and every reply written in the viewer.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 04:30:00
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_arrival"), ["arrival"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_arrival"))
