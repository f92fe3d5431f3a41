"""member choices: edited text, home address, decision and sending times; copies to members

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("final_text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sender_address", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cc_addr", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("cc_addr")
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
        batch_op.drop_column("decided_at")
        batch_op.drop_column("sender_address")
        batch_op.drop_column("final_text")
