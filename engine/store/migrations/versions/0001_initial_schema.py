"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "employer_contact",
        sa.Column("employer_key", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("postal_address", sa.Text(), nullable=True),
        sa.Column("salutation", sa.String(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("employer_key"),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_action_at", ["action", "at"], unique=False)

    op.create_table(
        "member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("membership_no", sa.String(length=40), nullable=False),
        sa.Column("first_name", sa.String(), nullable=False),
        sa.Column("last_name", sa.String(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("postcode", sa.String(length=8), nullable=False),
        sa.Column("school_urn", sa.String(length=20), nullable=False),
        sa.Column("address_line1", sa.String(), nullable=True),
        sa.Column("address_line2", sa.String(), nullable=True),
        sa.Column("address_line3", sa.String(), nullable=True),
        sa.Column("town", sa.String(), nullable=True),
        sa.Column("role", sa.String(), nullable=True),
        sa.Column("branch", sa.String(), nullable=True),
        sa.Column("region", sa.String(), nullable=True),
        sa.Column("custom", sa.JSON(), nullable=False),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mp_status", sa.String(length=16), nullable=False),
        sa.Column("mp_detail", sa.String(), nullable=True),
        sa.Column("constituency_code", sa.String(length=9), nullable=True),
        sa.Column("constituency_name", sa.String(), nullable=True),
        sa.Column("employer_status", sa.String(length=16), nullable=False),
        sa.Column("employer_detail", sa.String(), nullable=True),
        sa.Column("employer_key", sa.String(), nullable=True),
        sa.Column("employer_name", sa.String(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("membership_no"),
    )
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_employer_key"), ["employer_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_employer_status"), ["employer_status"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_mp_status"), ["mp_status"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_postcode"), ["postcode"], unique=False)
        batch_op.create_index(batch_op.f("ix_member_school_urn"), ["school_urn"], unique=False)

    op.create_table(
        "mp",
        sa.Column("constituency_code", sa.String(length=9), nullable=False),
        sa.Column("constituency_name", sa.String(), nullable=False),
        sa.Column("vacant", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("party", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("address_as", sa.String(), nullable=True),
        sa.Column("full_title", sa.String(), nullable=True),
        sa.Column("postal_address", sa.Text(), nullable=True),
        sa.Column("parliament_member_id", sa.Integer(), nullable=True),
        sa.Column("parliament_constituency_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("constituency_code"),
    )
    op.create_table(
        "postcode_lookup",
        sa.Column("postcode", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("constituency_code", sa.String(length=9), nullable=True),
        sa.Column("constituency_name", sa.String(), nullable=True),
        sa.Column("country", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("postcode"),
    )
    op.create_table(
        "school",
        sa.Column("urn", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("type_code", sa.Integer(), nullable=True),
        sa.Column("type_name", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("la_code", sa.String(), nullable=True),
        sa.Column("la_name", sa.String(), nullable=True),
        sa.Column("trust_code", sa.String(), nullable=True),
        sa.Column("trust_name", sa.String(), nullable=True),
        sa.Column("postcode", sa.String(), nullable=True),
        sa.Column("constituency_code", sa.String(), nullable=True),
        sa.Column("employer_kind", sa.String(), nullable=True),
        sa.Column("employer_key", sa.String(), nullable=True),
        sa.Column("employer_name", sa.String(), nullable=True),
        sa.Column("employer_problem", sa.String(), nullable=True),
        sa.Column("employer_detail", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("urn"),
    )
    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_school_employer_key"), ["employer_key"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("school", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_school_employer_key"))

    op.drop_table("school")
    op.drop_table("postcode_lookup")
    op.drop_table("mp")
    with op.batch_alter_table("member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_school_urn"))
        batch_op.drop_index(batch_op.f("ix_member_postcode"))
        batch_op.drop_index(batch_op.f("ix_member_mp_status"))
        batch_op.drop_index(batch_op.f("ix_member_employer_status"))
        batch_op.drop_index(batch_op.f("ix_member_employer_key"))

    op.drop_table("member")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_action_at")

    op.drop_table("event")
    op.drop_table("employer_contact")
