"""The append-only event log: one row per thing a command did."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from engine.store.models import event_table, utcnow


def record_event(conn: Connection, action: str, **detail: Any) -> None:
    conn.execute(event_table.insert().values(at=utcnow(), action=action, detail=detail))
