"""index letters by member and by the letter they follow

Incoming mail is matched to the letters of the member who sent or forwarded it;
the letter table's unique index starts with the wave, so finding a member's
letters read the whole table (4-5 messages/s once it held 100,000 letters).
The report counts each letter's follow-up, found by parent_id: unindexed, that
read every letter once per letter.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_letter_member_id", "letter", ["member_id"])
    op.create_index("ix_letter_parent_id", "letter", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_letter_parent_id", table_name="letter")
    op.drop_index("ix_letter_member_id", table_name="letter")
