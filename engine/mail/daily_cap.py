"""Flood control: at most a wave's daily cap of letters to one target address per day.

A day is a calendar day in Europe/London, where the MPs' and employers' offices
are. The worker counts each letter to a target (a member's letter, follow-up or
chaser; never invitations or receipts) in `target_day`, one row per address and
day, with one upsert that only adds when the count is under the cap. The upsert
takes the row's lock (PostgreSQL) or the database's write lock (SQLite), so two
workers racing for a target's last slot never both get it; a letter that then
does not go (refused, retried, suppressed) gives its slot back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Dialect, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.db import FastStatement
from engine.store.models import target_day_table

LONDON = ZoneInfo("Europe/London")


def london_day(moment: datetime) -> date:
    """The calendar day in Europe/London at an aware moment."""
    return moment.astimezone(LONDON).date()


def next_day_start(day: date) -> datetime:
    """Midnight in Europe/London at the start of the day after `day`, as UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=LONDON).astimezone(UTC)


def _reserve_statement(dialect: Dialect) -> Any:
    t = target_day_table
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    return (
        insert(t)
        .values(address=bindparam("address"), day=bindparam("day"), sent=1)
        .on_conflict_do_update(
            index_elements=[t.c.address, t.c.day],
            set_={"sent": t.c.sent + 1},
            where=t.c.sent < bindparam("cap"),
        )
    )


_RELEASE = (
    target_day_table.update()
    .where(
        target_day_table.c.address == bindparam("address"),
        target_day_table.c.day == bindparam("day"),
        target_day_table.c.sent > 0,
    )
    .values(sent=target_day_table.c.sent - 1)
)


class DailyCap:
    """One worker's slots: taken in the transaction that starts a letter's delivery."""

    def __init__(self, dialect: Dialect):
        self.reserve_slot = FastStatement(_reserve_statement(dialect), dialect)
        self.release_slot = FastStatement(_RELEASE, dialect)
        # Targets found full today (with the cap that was full): their other letters wait
        # without another write, until the day or the cap changes.
        self.full: set[tuple[str, date, int]] = set()

    def reserve(self, conn: Any, address: str, day: date, cap: int) -> bool:
        """Take one of today's slots for `address`; False when `cap` letters have gone today."""
        if (address, day, cap) in self.full:
            return False
        if self.reserve_slot.execute(conn, address=address, day=day, cap=cap) == 1:
            return True
        self.full.add((address, day, cap))
        return False

    def release(self, conn: Any, address: str, day: date) -> None:
        """Give a slot back: the letter that took it did not go."""
        self.release_slot.execute(conn, address=address, day=day)
        self.full = {key for key in self.full if key[:2] != (address, day)}


def sent_today(conn: Any, address: str, moment: datetime) -> int:
    """Letters counted against `address`'s cap on the London day of `moment`."""
    t = target_day_table.c
    row = conn.execute(
        target_day_table.select().where(t.address == address, t.day == london_day(moment))
    ).first()
    return row.sent if row else 0
