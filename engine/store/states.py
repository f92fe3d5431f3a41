"""Letter state changes: one function per transition, so each has one home."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam

from engine.store.db import FastStatement
from engine.store.models import letter_table, utcnow

# Built once: the sending worker runs this for every invitation.
_INVITED = (
    letter_table.update()
    .where(letter_table.c.id == bindparam("letter_id"), letter_table.c.state == "drafted")
    .values(state="invited", updated_at=bindparam("now"))
)


_invited_by_dialect: dict[int, FastStatement] = {}


def mark_invited(conn: Connection, letter_id: int) -> bool:
    """drafted → invited, once the member's invitation has gone. False if it had moved on already."""
    fast = _invited_by_dialect.get(id(conn.dialect))
    if fast is None:
        fast = _invited_by_dialect[id(conn.dialect)] = FastStatement(_INVITED, conn.dialect)
    return bool(fast.execute(conn, letter_id=letter_id, now=utcnow()))


_UNDECIDED = ("drafted", "invited")


def _decide(conn: Connection, letter_id: int, state: str, **values: object) -> bool:
    """Move an undecided letter to `state`; False when it was decided already (a double click, a replay)."""
    lt = letter_table.c
    now = utcnow()
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state.in_(_UNDECIDED))
        .values(state=state, decided_at=now, updated_at=now, **values)
    ).rowcount
    return bool(done)


def mark_queued(conn: Connection, letter_id: int, final_text: str | None, sender_address: str | None) -> bool:
    """invited → queued: the member asked us to send it for them."""
    return _decide(conn, letter_id, "queued", final_text=final_text, sender_address=sender_address)


def mark_self_sent(conn: Connection, letter_id: int, final_text: str | None) -> bool:
    """invited → self_sent: the member sent it themselves."""
    return _decide(conn, letter_id, "self_sent", final_text=final_text)


def mark_opted_out(conn: Connection, letter_id: int) -> bool:
    """invited → opted_out: not for this member."""
    return _decide(conn, letter_id, "opted_out")


def mark_undelivered(conn: Connection, letter_id: int, reason: str) -> bool:
    """queued → failed: the letter cannot reach its recipient (refused for good, suppressed,
    unbuildable). It says why, on the member's page and in `wave status`."""
    lt = letter_table.c
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state == "queued")
        .values(state="failed", bounce_reason=reason[:500], updated_at=utcnow())
    ).rowcount
    return bool(done)


def mark_sent(conn: Connection, letter_id: int) -> bool:
    """queued → sent: the worker delivered the letter to its target."""
    lt = letter_table.c
    now = utcnow()
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state == "queued")
        .values(state="sent", sent_at=now, updated_at=now)
    ).rowcount
    return bool(done)
