"""Letter state changes: one function per transition, so each has one home."""

from __future__ import annotations

from sqlalchemy import Connection

from .models import letter_table, utcnow


def mark_invited(conn: Connection, letter_id: int) -> bool:
    """drafted → invited, once the member's invitation has gone. False if it had moved on already."""
    lt = letter_table.c
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state == "drafted")
        .values(state="invited", updated_at=utcnow())
    ).rowcount
    return bool(done)
