"""FastQuery and FastInsert, which run ingest's per-message statements on the driver directly,
read and write exactly what SQLAlchemy Core would, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from engine.store.db import FastInsert, FastQuery
from engine.store.models import inbound_table

_BY_IDS = (
    select(inbound_table)
    .where(
        inbound_table.c.id.in_(bindparam("ids", expanding=True)),
        inbound_table.c.kind.in_(("reply", "bounce")),
    )
    .order_by(inbound_table.c.id)
)
_MARK = (
    inbound_table.update()
    .where(inbound_table.c.id.in_(bindparam("ids", expanding=True)), inbound_table.c.kind == "reply")
    .values(outcome="positive", outcome_at=bindparam("at"))
)


def _row(n: int, kind: str, **more) -> dict:
    when = datetime(2026, 11, 16, 15, n, 7, 123456, tzinfo=UTC)
    return {
        "dedupe_key": f"mid:<{n}@x.example>",
        "source": "test",
        "raw": b"From: a@b.example\r\n\r\nbody \xff\x00",
        "size": 19,
        "message_id": f"<{n}@x.example>",
        "received_at": when,
        "ingested_at": when,
        "kind": kind,
        "forwarded": n % 2 == 0,
        **more,
    }


def test_rows_read_and_stored_as_core_reads_and_stores_them(engine):
    fast_insert = FastInsert(inbound_table, engine.dialect)
    with engine.begin() as conn:
        ids = [
            fast_insert.insert(conn, _row(1, "reply", text="Dear member — thank you", author_addr=None)),
            fast_insert.insert(conn, _row(2, "bounce")),
            conn.execute(inbound_table.insert(), _row(3, "reply", text="Core's own")).inserted_primary_key[0],
            fast_insert.insert(conn, _row(4, "auto_reply")),
        ]
    query = FastQuery(_BY_IDS, engine.dialect)
    with engine.connect() as conn:
        core = [dict(r._mapping) for r in conn.execute(_BY_IDS, {"ids": ids})]
        for wanted in (ids, ids[:1], ids[1:3], []):
            expected = [r for r in core if r["id"] in wanted]
            assert query.rows(conn, ids=wanted) == expected
        assert [r["id"] for r in core] == ids[:3]  # the auto-reply is not of the kinds asked for
        assert core[0]["raw"] == b"From: a@b.example\r\n\r\nbody \xff\x00"
        assert core[0]["text"] == "Dear member — thank you"
        assert core[1]["forwarded"] is True and core[0]["forwarded"] is False


def test_an_update_counts_its_rows_and_writes_as_core_would(engine):
    fast_insert = FastInsert(inbound_table, engine.dialect)
    at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    with engine.begin() as conn:
        ids = [
            fast_insert.insert(conn, _row(n, kind)) for n, kind in ((1, "reply"), (2, "bounce"), (3, "reply"))
        ]
        assert FastQuery(_MARK, engine.dialect).execute(conn, ids=ids, at=at) == 2
    with engine.connect() as conn:
        outcomes = conn.execute(
            select(inbound_table.c.outcome, inbound_table.c.outcome_at).order_by(inbound_table.c.id)
        ).all()
    stored_at = outcomes[0][1]
    assert stored_at.replace(tzinfo=stored_at.tzinfo or UTC) == at
    assert [o for o, _ in outcomes] == ["positive", None, "positive"]


def test_a_refused_insert_fails_as_core_fails_and_leaves_the_transaction_usable(engine):
    fast_insert = FastInsert(inbound_table, engine.dialect)
    with engine.begin() as conn:
        fast_insert.insert(conn, _row(1, "reply"))
        with pytest.raises(IntegrityError), conn.begin_nested():
            fast_insert.insert(conn, _row(1, "bounce"))  # the same dedupe key
        fast_insert.insert(conn, _row(2, "reply"))
    with engine.connect() as conn:
        assert conn.execute(select(inbound_table.c.kind).order_by(inbound_table.c.id)).scalars().all() == [
            "reply",
            "reply",
        ]
