"""envelope_recipients: who each delivery was addressed to, indexed for the access rule

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 11:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "envelope_recipients",
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["messages.id"],
            name=op.f("fk_envelope_recipients_message_pk_messages"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_envelope_recipients_person_id_people")
        ),
        sa.PrimaryKeyConstraint("message_pk", "person_id", name=op.f("pk_envelope_recipients")),
    )
    with op.batch_alter_table("envelope_recipients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_envelope_recipients_person_id"), ["person_id"], unique=False
        )
    _backfill()


def _backfill() -> None:
    """Rows for the deliveries already stored (their envelope_to, one address a line)."""
    conn = op.get_bind()
    people: dict[str, int] = dict(conn.execute(sa.text("SELECT address, id FROM people")).all())
    pairs: set[tuple[int, str]] = set()
    deliveries = conn.execute(
        sa.text("SELECT message_pk, envelope_to FROM deliveries WHERE envelope_to <> ''")
    )
    for message_pk, lines in deliveries:
        for value in lines.split("\n"):
            address = value.strip().lower()
            if address and "@" in address:
                pairs.add((message_pk, address))
    missing = sorted({address for _, address in pairs} - people.keys())
    for address in missing:
        conn.execute(
            sa.text("INSERT INTO people (address, name) VALUES (:address, '')"),
            {"address": address},
        )
    if missing:
        people = dict(conn.execute(sa.text("SELECT address, id FROM people")).all())
    rows = [{"m": pk, "p": people[address]} for pk, address in sorted(pairs)]
    if rows:
        conn.execute(
            sa.text("INSERT INTO envelope_recipients (message_pk, person_id) VALUES (:m, :p)"),
            rows,
        )


def downgrade() -> None:
    with op.batch_alter_table("envelope_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_envelope_recipients_person_id"))
    op.drop_table("envelope_recipients")
