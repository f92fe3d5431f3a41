"""one letter per target, and a meeting to chase before

Waves get `one_per_target` (one letter per employer, MP or fixed recipient,
however many selected members share it: a JCNC agenda letter from the
branch's officials), `meeting_date` (the meeting the letter is for; a letter
unanswered is chased before it, never after it) and `chase_before` (how many
working days before the meeting). Waves created before keep one letter per
member and no meeting, as they had.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, not a batch copy: the letter table refers to the wave table.
    op.add_column(
        "wave", sa.Column("one_per_target", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("wave", sa.Column("meeting_date", sa.Date(), nullable=True))
    op.add_column("wave", sa.Column("chase_before", sa.Integer(), nullable=False, server_default="5"))


def downgrade() -> None:
    op.drop_column("wave", "chase_before")
    op.drop_column("wave", "meeting_date")
    op.drop_column("wave", "one_per_target")
