"""Resolving every member to their MP (via their postcode) and their employer (via their school).

Network work is done once per distinct postcode, in bulk, and cached; the
members themselves are then updated by a few set-based statements, so the
cost per member is a row write, never a request or a query.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import Engine, and_, case, exists, func, literal, null, or_, select
from sqlalchemy import update as sql_update

from engine.errors import NetworkUnavailable
from engine.lookup.postcode_cache import postcodes_to_ask, store_answers
from engine.lookup.postcodes_io import BATCH, PostcodeAnswer, PostcodesIO
from engine.store.events import record_event
from engine.store.models import (
    employer_table,
    member_table,
    mp_table,
    postcode_table,
    school_table,
    utcnow,
)

# Failed batches in a row after which postcodes.io is taken as down for this run.
DOWN_AFTER = 3


@dataclass
class ResolveSummary:
    members: int = 0
    mp: dict[str, int] = field(default_factory=dict)
    employer: dict[str, int] = field(default_factory=dict)
    postcodes_asked: int = 0
    requests: int = 0
    network: str = "online"  # online | offline | unavailable
    network_message: str | None = None
    employers_without_contact: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_members(
    engine: Engine,
    postcodes_io: PostcodesIO | None,
    *,
    refresh: bool = False,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ResolveSummary:
    """Look up uncached postcodes (none when `postcodes_io` is None), then resolve every member.

    `concurrency` bulk requests are kept in flight at once.
    """
    summary = ResolveSummary()
    if postcodes_io is None:
        summary.network = "offline"
    else:
        _fetch_postcodes(engine, postcodes_io, summary, refresh, progress, on_start, max(1, concurrency))
        summary.requests = postcodes_io.requests_made
    with engine.begin() as conn:
        now = utcnow()
        conn.execute(_mp_update(now))
        conn.execute(_pending_update(summary, now))
        conn.execute(_employer_update(now))
        conn.execute(_unknown_school_update(now))
        conn.execute(_no_school_update(now))
        _count(conn, summary)
        record_event(conn, "resolve", **summary.as_dict())
    return summary


def _fetch_postcodes(
    engine: Engine,
    client: PostcodesIO,
    summary: ResolveSummary,
    refresh: bool,
    progress: Callable[[int], None] | None,
    on_start: Callable[[int], None] | None,
    concurrency: int,
) -> None:
    postcodes = postcodes_to_ask(engine, refresh=refresh)
    if on_start is not None:
        on_start(len(postcodes))
    batches = iter(postcodes)

    def ask(batch: list[str]) -> list[PostcodeAnswer]:
        found = client.lookup(batch)
        answers = [a for a in found.values() if a is not None]
        # Unknown postcodes are rare; asking why (retired? not a postcode?)
        # turns "not found" into something a member can act on.
        answers += [client.explain_unknown(pc) for pc, a in found.items() if a is None]
        return answers

    failed_in_a_row = 0

    def store(future: Future[list[PostcodeAnswer]], size: int) -> None:
        nonlocal failed_in_a_row
        try:
            answers = future.result()
        except NetworkUnavailable as exc:
            # One batch the service keeps failing (a 500 on one odd postcode, a slow answer) must
            # not hold back every batch after it, run after run: its members stay pending and the
            # run goes on. Several failures in a row mean the service is down: stop asking.
            summary.network = "unavailable"
            summary.network_message = str(exc)
            failed_in_a_row += 1
            if failed_in_a_row >= DOWN_AFTER:
                raise
            return
        failed_in_a_row = 0
        # Each batch is committed alone, so an interrupted run keeps its progress.
        with engine.begin() as conn:
            store_answers(conn, answers)
        summary.postcodes_asked += size
        if progress is not None:
            progress(size)

    # A few requests in flight hide the service's latency; a bounded queue of
    # them keeps memory flat whatever the number of postcodes.
    in_flight: deque[tuple[Future[list[PostcodeAnswer]], int]] = deque()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="postcodes") as pool:
        try:
            while batch := list(islice(batches, BATCH)):
                in_flight.append((pool.submit(ask, batch), len(batch)))
                if len(in_flight) > concurrency:
                    store(*in_flight.popleft())
            while in_flight:
                store(*in_flight.popleft())
        except NetworkUnavailable:
            for future, _ in in_flight:
                future.cancel()


def _mp_update(now: Any) -> Any:
    """Set every looked-up member's MP outcome from the cache and the MP table."""
    m, p, r = member_table.c, postcode_table.c, mp_table.c
    no_seat = r.constituency_code.is_(None)
    outcome = (
        select(
            p.postcode,
            p.constituency_code,
            p.constituency_name,
            case(
                (p.status != "found", p.status),
                (p.constituency_code.is_(None), literal("no_mp")),
                (no_seat, literal("no_mp")),
                (r.vacant, literal("no_mp")),
                else_=literal("resolved"),
            ).label("status"),
            case(
                (p.status != "found", p.detail),
                (p.constituency_code.is_(None), p.detail),
                (no_seat, literal("no MP on record for ") + p.constituency_name),
                (r.vacant, literal("seat vacant: ") + p.constituency_name),
                else_=None,
            ).label("detail"),
        )
        .select_from(postcode_table.outerjoin(mp_table, r.constituency_code == p.constituency_code))
        .subquery("outcome")
    )
    # Renders UPDATE … FROM (SELECT …): one statement for all members, on SQLite and PostgreSQL.
    return _set_where_changed(
        m.postcode == outcome.c.postcode,
        now,
        mp_status=outcome.c.status,
        mp_detail=outcome.c.detail,
        constituency_code=outcome.c.constituency_code,
        constituency_name=outcome.c.constituency_name,
    )


def _set_where_changed(condition: Any, now: Any, **values: Any) -> Any:
    """UPDATE member rows matching `condition` whose values would change.

    Skipping unchanged rows makes a repeat resolve nearly free, and on
    PostgreSQL avoids writing a new version of every member each time.
    """
    changed = or_(*(member_table.c[name].is_distinct_from(value) for name, value in values.items()))
    return sql_update(member_table).where(condition, changed).values(**values, resolved_at=now)


def _pending_update(summary: ResolveSummary, now: Any) -> Any:
    """Members whose postcode has no answer yet stay pending, saying why."""
    m, p = member_table.c, postcode_table.c
    why = {
        "offline": "not looked up yet (offline): run `campaign resolve` with network",
        "unavailable": "not looked up yet (postcodes.io unavailable): re-run `campaign resolve`",
    }.get(summary.network, "postcodes.io gave no answer: re-run `campaign resolve`")
    return _set_where_changed(
        ~exists().where(p.postcode == m.postcode),
        now,
        mp_status=literal("pending"),
        mp_detail=literal(why),
        constituency_code=null(),
        constituency_name=null(),
    )


def _employer_update(now: Any) -> Any:
    m, s = member_table.c, school_table.c
    return _set_where_changed(
        m.school_urn == s.urn,
        now,
        employer_status=func.coalesce(s.employer_problem, "resolved"),
        employer_detail=s.employer_detail,
        employer_key=s.employer_key,
        employer_name=s.employer_name,
    )


def _unknown_school_update(now: Any) -> Any:
    m, s = member_table.c, school_table.c
    return _set_where_changed(
        and_(m.school_urn != "", ~exists().where(s.urn == m.school_urn)),
        now,
        employer_status=literal("unknown_urn"),
        employer_detail=literal("URN ") + m.school_urn + literal(" is not in the schools list"),
        employer_key=null(),
        employer_name=null(),
    )


def _no_school_update(now: Any) -> Any:
    """Members with no school (supply, central or retired staff) have no employer to write to."""
    m = member_table.c
    return _set_where_changed(
        m.school_urn == "",
        now,
        employer_status=literal("no_employer"),
        employer_detail=literal("no school on record (supply, central or retired staff)"),
        employer_key=null(),
        employer_name=null(),
    )


def _count(conn: Any, summary: ResolveSummary) -> None:
    m, c = member_table.c, employer_table.c
    summary.mp = dict(conn.execute(select(m.mp_status, func.count()).group_by(m.mp_status)).all())
    summary.employer = dict(
        conn.execute(select(m.employer_status, func.count()).group_by(m.employer_status)).all()
    )
    summary.members = sum(summary.mp.values())
    summary.employers_without_contact = conn.execute(
        select(func.count(func.distinct(m.employer_key))).where(
            m.employer_key.is_not(None),
            ~exists().where(c.employer_key == m.employer_key),
        )
    ).scalar_one()
