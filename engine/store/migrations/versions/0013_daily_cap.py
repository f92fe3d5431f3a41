"""flood control: a daily cap of letters per target

Waves get `daily_cap`, the most letters one target address may receive in a
day from the sending worker (0: no cap; NULL, for waves created before: the
CAMPAIGN_DAILY_CAP setting when they send). The new table `target_day` counts
the letters sent to each target address on each day (Europe/London), so the
worker checks the cap with one keyed upsert instead of counting the outbox.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, not a batch copy: the letter table refers to the wave table.
    op.add_column("wave", sa.Column("daily_cap", sa.Integer(), nullable=True))
    op.create_table(
        "target_day",
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address", "day"),
    )


def downgrade() -> None:
    op.drop_table("target_day")
    op.drop_column("wave", "daily_cap")
