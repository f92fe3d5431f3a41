"""Letter state changes: one function per transition, so each has one home."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select

from engine.errors import CampaignError
from engine.store.db import FastStatement
from engine.store.events import record_event
from engine.store.models import letter_table, outbox_table, utcnow

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


# Unreachable too: a member whose invitation bounced may still be reached another way (by phone)
# and staff record their choice with `letters decide`.
_UNDECIDED = ("drafted", "invited", "unreachable")


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


def mark_bounced(conn: Connection, letter_id: int, reason: str, *, member_side: bool) -> bool:
    """A message of this letter came back for good.

    The letter to its target (sent or still queued) → bounced: we cannot reach the MP or employer.
    The member's own invitation (`member_side`; drafted or invited) → unreachable: we cannot reach
    the member, and the letter never went, so no target is waiting for it or will be chased.
    """
    lt = letter_table.c
    state, before = (
        ("unreachable", ("drafted", "invited")) if member_side else ("bounced", ("sent", "queued"))
    )
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state.in_(before))
        .values(state=state, bounce_reason=reason[:500], updated_at=utcnow())
    ).rowcount
    return bool(done)


# A member's decision that staff can take back: nothing has left for the target yet.
UNDOABLE = ("opted_out", "self_sent", "queued")


def undo_decision(conn: Connection, letter: dict[str, Any], *, by: str = "staff") -> dict[str, Any]:
    """opted_out / self_sent / queued → invited: a decision made by mistake, taken back.

    A queued letter's outbox message is removed in the same transaction, and only while it
    waits (a worker that has claimed it may be sending it). The member's edited text and
    address are kept, so their words come back on their page. Raises CampaignError when
    the decision can no longer be undone (the letter went, or was never decided).
    """
    lt, o = letter_table.c, outbox_table.c
    reference = letter["reference"]
    state = conn.execute(select(lt.state).where(lt.id == letter["id"])).scalar_one()
    if state == "queued":
        waiting = conn.execute(
            select(o.id, o.status).where(o.letter_id == letter["id"], o.kind == "letter")
        ).all()
        busy = [status for _, status in waiting if status != "queued"]
        ids = [i for i, _ in waiting]
        # The delete is guarded by the status, so a worker that claimed the message meanwhile wins.
        if busy or (
            ids
            and conn.execute(outbox_table.delete().where(o.id.in_(ids), o.status == "queued")).rowcount
            != len(ids)
        ):
            raise CampaignError(
                f"letter {reference} is already on its way to {letter['target_name']} "
                f"(its message is {busy[0] if busy else 'being sent'}): it cannot be taken back"
            )
    elif state not in UNDOABLE:
        if state in ("sent", "replied", "overdue", "followed_up", "bounced"):
            why = "it was sent to its target, and a sent letter cannot be unsent"
        elif state in ("drafted", "invited"):
            why = "the member has not decided yet: there is nothing to undo"
        else:
            why = "only a decision to opt out, send it yourself or send it for me can be undone"
        raise CampaignError(f"letter {reference} is {state}: {why}")
    now = utcnow()
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter["id"], lt.state == state)
        .values(state="invited", decided_at=None, updated_at=now)
    ).rowcount
    if not done:
        raise CampaignError(f"letter {reference} changed while undoing: run the command again")
    record_event(conn, "letter.undo", reference=reference, undone=state, by=by)
    return {"reference": reference, "undone": state, "state": "invited"}


# A pledge can be answered while the link works, and changed: pledged ↔ declined.
_ANSWERABLE = ("drafted", "invited", "unreachable", "pledged", "declined")


def mark_pledge_answer(conn: Connection, letter_id: int, pledged: bool) -> bool:
    """A pledge wave's row → pledged or declined: the member's answer, or their changed mind.

    False when the row is in neither an unanswered nor an answered state (it is not a pledge).
    """
    lt = letter_table.c
    now = utcnow()
    done = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state.in_(_ANSWERABLE))
        .values(state="pledged" if pledged else "declined", decided_at=now, updated_at=now)
    ).rowcount
    return bool(done)
