"""unreachable letters and what a wave asks

A letter whose member's invitation bounced was marked `bounced`, like a letter
that came back from its MP or employer; it becomes `unreachable` (we cannot
reach the member; the letter never went). Waves get `asks`, the one plain
sentence their invitations give for what the letter asks. Downgrading marks
unreachable letters bounced again and drops `asks`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_INVITATIONS = ("invitation", "follow_up_invitation", "chaser_invitation")


def upgrade() -> None:
    # In place, not a batch copy: the letter table refers to the wave table.
    op.add_column("wave", sa.Column("asks", sa.String(), nullable=True))
    letter = sa.table("letter", sa.column("id", sa.Integer()), sa.column("state"))
    outbox = sa.table("outbox", sa.column("letter_id", sa.Integer()), sa.column("kind"), sa.column("status"))
    # Only the member's invitation came back: no message of the letter itself ever went.
    invitation_bounced = sa.exists().where(
        outbox.c.letter_id == letter.c.id, outbox.c.kind.in_(_INVITATIONS), outbox.c.status == "bounced"
    )
    letter_went = sa.exists().where(outbox.c.letter_id == letter.c.id, outbox.c.kind == "letter")
    op.get_bind().execute(
        letter.update()
        .where(letter.c.state == "bounced", invitation_bounced, ~letter_went)
        .values(state="unreachable")
    )


def downgrade() -> None:
    letter = sa.table("letter", sa.column("state"))
    op.get_bind().execute(letter.update().where(letter.c.state == "unreachable").values(state="bounced"))
    op.drop_column("wave", "asks")
