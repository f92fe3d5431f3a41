"""replies: incoming mail kept raw, delivery failures, suppressed addresses; follow-ups and chasers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("wave", schema=None) as batch_op:
        batch_op.add_column(sa.Column("follow_up_template", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("chaser_template", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("ask_days", sa.Integer(), nullable=False, server_default="14"))
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=10), nullable=False, server_default="letter"))
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("replied_at", _WHEN, nullable=True))
        batch_op.add_column(sa.Column("bounce_reason", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("overdue_at", _WHEN, nullable=True))
        batch_op.add_column(sa.Column("asked_at", _WHEN, nullable=True))
        batch_op.add_column(sa.Column("reminded_at", _WHEN, nullable=True))
        batch_op.add_column(sa.Column("mp_answer", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("mp_answered_at", _WHEN, nullable=True))
        batch_op.create_foreign_key("fk_letter_parent", "letter", ["parent_id"], ["id"])
        batch_op.drop_constraint("uq_letter_wave_member", type_="unique")
        batch_op.create_unique_constraint("uq_letter_wave_member_kind", ["wave_id", "member_id", "kind"])
    op.create_index("ix_letter_wave_target", "letter", ["wave_id", "target_key"])
    op.create_index("ix_member_email", "member", ["email"])
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=16), type_=sa.String(length=24), existing_nullable=False
        )
    op.create_table(
        "inbound",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=True),
        sa.Column("received_at", _WHEN, nullable=False),
        sa.Column("ingested_at", _WHEN, nullable=False),
        sa.Column("from_addr", sa.String(), nullable=True),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("problem", sa.String(), nullable=True),
        sa.Column("letter_id", sa.Integer(), nullable=True),
        sa.Column("match_method", sa.String(length=20), nullable=True),
        sa.Column("forwarded", sa.Boolean(), nullable=False),
        sa.Column("author_name", sa.String(), nullable=True),
        sa.Column("author_addr", sa.String(), nullable=True),
        sa.Column("authored_at", _WHEN, nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("attachment_name", sa.String(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("suggested_outcome", sa.String(length=16), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("outcome_at", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(["letter_id"], ["letter.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_inbound_kind", "inbound", ["kind"])
    op.create_index("ix_inbound_letter_id", "inbound", ["letter_id"])
    op.create_table(
        "delivery_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inbound_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=True),
        sa.Column("diagnostic", sa.Text(), nullable=True),
        sa.Column("permanent", sa.Boolean(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["inbound_id"], ["inbound.id"]),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_delivery_failure_inbound_id", "delivery_failure", ["inbound_id"])
    op.create_index("ix_delivery_failure_address", "delivery_failure", ["address"])
    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("inbound_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(["inbound_id"], ["inbound.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )


def downgrade() -> None:
    op.drop_table("suppression")
    op.drop_index("ix_delivery_failure_address", table_name="delivery_failure")
    op.drop_index("ix_delivery_failure_inbound_id", table_name="delivery_failure")
    op.drop_table("delivery_failure")
    op.drop_index("ix_inbound_letter_id", table_name="inbound")
    op.drop_index("ix_inbound_kind", table_name="inbound")
    op.drop_table("inbound")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=24), type_=sa.String(length=16), existing_nullable=False
        )
    op.drop_index("ix_member_email", table_name="member")
    op.drop_index("ix_letter_wave_target", table_name="letter")
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.drop_constraint("uq_letter_wave_member_kind", type_="unique")
        batch_op.create_unique_constraint("uq_letter_wave_member", ["wave_id", "member_id"])
        batch_op.drop_constraint("fk_letter_parent", type_="foreignkey")
        for column in ("mp_answered_at", "mp_answer", "reminded_at", "asked_at", "overdue_at"):
            batch_op.drop_column(column)
        for column in ("bounce_reason", "replied_at", "parent_id", "kind"):
            batch_op.drop_column(column)
    with op.batch_alter_table("wave", schema=None) as batch_op:
        batch_op.drop_column("ask_days")
        batch_op.drop_column("chaser_template")
        batch_op.drop_column("follow_up_template")
