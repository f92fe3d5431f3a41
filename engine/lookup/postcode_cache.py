"""The database cache of postcodes.io answers: what is known, what still needs asking."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from engine.errors import CampaignError
from engine.lookup.postcodes_io import PostcodeAnswer, answer_from_result
from engine.members.postcode import normalise_postcode
from engine.store.db import replace_rows
from engine.store.models import member_table, postcode_table, utcnow


def store_answers(conn: Connection, answers: Iterable[PostcodeAnswer]) -> int:
    now = utcnow()
    rows = [{**answer.__dict__, "fetched_at": now} for answer in answers]
    replace_rows(conn, postcode_table, "postcode", rows)
    return len(rows)


def postcodes_to_ask(engine: Engine, *, refresh: bool = False) -> list[str]:
    """Distinct member postcodes with no cached answer (every one with `refresh`)."""
    m, p = member_table.c, postcode_table.c
    stmt = select(m.postcode).distinct().order_by(m.postcode)
    if not refresh:
        stmt = (
            select(m.postcode)
            .distinct()
            .select_from(member_table.outerjoin(postcode_table, p.postcode == m.postcode))
            .where(p.postcode.is_(None))
            .order_by(m.postcode)
        )
    with engine.connect() as conn:
        # One short string per distinct postcode, read in one go because the
        # caller writes to the same database while working through them.
        return list(conn.execute(stmt).scalars())


def load_cache_file(engine: Engine, path: str | Path) -> tuple[int, int]:
    """Load recorded postcodes.io bulk replies (`{"status":200,"result":[...]}`) into the cache.

    Returns (answers stored, unknown entries skipped): an unknown postcode is
    left for `resolve` to ask about online, since the file cannot say why.
    """
    path = Path(path)
    try:
        body: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: not JSON: {exc}") from None
    replies = body if isinstance(body, list) else [body]
    answers: list[PostcodeAnswer] = []
    unknown = 0
    for reply in replies:
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), list):
            raise CampaignError(f"{path}: not a postcodes.io bulk reply (no result list)")
        for item in reply["result"]:
            query = item.get("query") if isinstance(item, dict) else None
            postcode = normalise_postcode(query) if isinstance(query, str) else None
            if postcode is None or not isinstance(item.get("result"), dict):
                unknown += 1
                continue
            answers.append(answer_from_result(postcode, item["result"]))
    with engine.begin() as conn:
        store_answers(conn, answers)
    return len(answers), unknown
