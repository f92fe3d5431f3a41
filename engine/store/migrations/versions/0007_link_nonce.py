"""link nonce: members' links made from a random value per letter, not from its printed reference

Every existing letter gets a random nonce and its old link is revoked (its
token_hash replaced by a random value): links made from references must stop
working. `campaign links reissue` then gives every letter its new link, and
`campaign wave reinvite` sends undecided members theirs. Downgrading drops the
nonces; the revoked links stay revoked.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PAGE = 5000


def upgrade() -> None:
    # NOT NULL with an empty default lets SQLite add the column in place (recreating the
    # letter table would have to drop a table the outbox refers to); every row is given its
    # nonce below, and the code refuses an empty one.
    with op.batch_alter_table("letter", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link_nonce", sa.String(length=32), nullable=False, server_default=""))
    letter = sa.table(
        "letter", sa.column("id", sa.Integer()), sa.column("link_nonce"), sa.column("token_hash")
    )
    update = (
        letter.update()
        .where(letter.c.id == sa.bindparam("letter_id"))
        .values(link_nonce=sa.bindparam("nonce"), token_hash=sa.bindparam("revoked"))
    )
    bind = op.get_bind()
    last = 0
    while True:
        ids = (
            bind.execute(sa.select(letter.c.id).where(letter.c.id > last).order_by(letter.c.id).limit(_PAGE))
            .scalars()
            .all()
        )
        if not ids:
            break
        bind.execute(
            update,
            [
                {"letter_id": i, "nonce": secrets.token_urlsafe(16), "revoked": secrets.token_hex(32)}
                for i in ids
            ],
        )
        last = ids[-1]
    if bind.dialect.name != "sqlite":
        op.alter_column("letter", "link_nonce", server_default=None)


def downgrade() -> None:
    # In place (SQLite 3.35+ drops a plain column itself): a batch copy would have to drop
    # the letter table, which the outbox refers to.
    op.drop_column("letter", "link_nonce")
