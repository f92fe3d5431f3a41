"""pledge waves and what a sent letter counts as

Waves get `question` (a pledge wave's "I will …", asked on the member's page
instead of a letter) and `done_label` (what a letter that went counts as in
`wave status`, e.g. "stepped down"). Both are NULL for the waves there are.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, not a batch copy: the letter table refers to the wave table.
    op.add_column("wave", sa.Column("question", sa.Text(), nullable=True))
    op.add_column("wave", sa.Column("done_label", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_column("wave", "done_label")
    op.drop_column("wave", "question")
