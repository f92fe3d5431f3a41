"""the nations a wave writes to

Waves get `nations`, the list of nations whose members take part (NULL: all),
so that a campaign about Ofsted, which inspects schools in England only, can
leave out members in Wales, Scotland and Northern Ireland. Waves created
before keep NULL and so reach every nation, as they did.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, not a batch copy: the letter table refers to the wave table.
    op.add_column("wave", sa.Column("nations", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("wave", "nations")
