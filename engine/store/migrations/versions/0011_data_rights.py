"""members' data rights and reports: forgetting a member, purging old reply bodies, pages opened

`forgotten_member` holds a digest of each forgotten member's number, so that an
older membership export imported again does not bring them back; members and
incoming messages get the moment they were forgotten or purged; letters get the
moment their member first opened their page, for the reports' funnel.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forgotten_member",
        sa.Column("number_hash", sa.String(length=64), primary_key=True),
        sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=False),
    )
    # In place, not a batch copy: other tables refer to these.
    op.add_column("member", sa.Column("forgotten_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("inbound", sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("letter", sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("letter", "opened_at")
    op.drop_column("inbound", "purged_at")
    op.drop_column("member", "forgotten_at")
    op.drop_table("forgotten_member")
