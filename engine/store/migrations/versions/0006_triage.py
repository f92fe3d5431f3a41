"""triage: why a message waits for staff, the letter it seems to be about, its sender's authentication

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.add_column(sa.Column("triage", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("authentication", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("suggested_letter_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_inbound_suggested_letter", "letter", ["suggested_letter_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("inbound", schema=None) as batch_op:
        batch_op.drop_constraint("fk_inbound_suggested_letter", type_="foreignkey")
        batch_op.drop_column("suggested_letter_id")
        batch_op.drop_column("authentication")
        batch_op.drop_column("triage")
