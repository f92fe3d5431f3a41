"""Representatives: the MP for each constituency, from a CSV or the Members API."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from engine.errors import CampaignError, NetworkUnavailable, RowErrors
from engine.lookup.parliament import COMMONS_ADDRESS, MembersAPI
from engine.members.csvfile import CsvSource
from engine.members.emails import EmailNotValidError, normalise_email
from engine.members.validation import header_problems
from engine.store.db import replace_rows
from engine.store.events import record_event
from engine.store.models import mp_table, postcode_table, utcnow

GSS_CONSTITUENCY = re.compile(r"[EWSN]\d{8}")
_KNOWN = {
    "constituencycode": "constituency_code",
    "gsscode": "constituency_code",
    "code": "constituency_code",
    "constituencyname": "constituency_name",
    "constituency": "constituency_name",
    "mpname": "name",
    "name": "name",
    "mp": "name",
    "party": "party",
    "email": "email",
    "emailaddress": "email",
    "addressas": "address_as",
    "salutation": "address_as",
}
_REQUIRED = ("constituency_code", "constituency_name", "name")


@dataclass
class RepsImportResult:
    file: str
    mps: int = 0
    vacant: int = 0


def import_mps(engine: Engine, path: str | Path, *, encoding: str | None = None) -> RepsImportResult:
    """Load an MP list (one row per constituency; a blank MP name means the seat is vacant)."""
    source = CsvSource(path, _KNOWN, _REQUIRED, encoding=encoding)
    result = RepsImportResult(file=str(path))
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    now = utcnow()
    for row in source.rows():
        v = row.values
        where = f"{path}:{row.line}"
        # An MP's name goes into the To header of every letter to them.
        unsafe = header_problems(v)
        problems.extend(f"{where}: {name}: {problem}" for name, problem in unsafe)
        if unsafe:
            continue
        code = v.get("constituency_code", "").upper()
        if not GSS_CONSTITUENCY.fullmatch(code):
            problems.append(f"{where}: constituency_code: {code!r} is not a GSS constituency code")
        elif code in seen:
            problems.append(f"{where}: constituency_code: {code} is also on line {seen[code]}")
        seen.setdefault(code, row.line)
        if not v.get("constituency_name"):
            problems.append(f"{where}: constituency_name: missing")
        email = v.get("email") or None
        if email:
            try:
                email = normalise_email(email)
            except EmailNotValidError as exc:
                problems.append(f"{where}: email: not an address ({exc})")
        name = v.get("name") or None
        rows.append(
            {
                "constituency_code": code,
                "constituency_name": v.get("constituency_name"),
                "vacant": name is None,
                "name": name,
                "party": v.get("party") or None,
                "email": email if name else None,
                "address_as": v.get("address_as") or None,
                "full_title": name,
                "postal_address": COMMONS_ADDRESS if name else None,
                "parliament_member_id": None,
                "parliament_constituency_id": None,
                "source": "csv",
                "updated_at": now,
            }
        )
    if problems:
        raise RowErrors(f"{path}: {len(problems)} problem(s); nothing imported", problems)
    with engine.begin() as conn:
        replace_rows(conn, mp_table, "constituency_code", rows)
        result.mps = sum(1 for r in rows if not r["vacant"])
        result.vacant = len(rows) - result.mps
        record_event(conn, "reps.import", file=str(path), mps=result.mps, vacant=result.vacant)
    return result


@dataclass
class RepsFetchResult:
    constituencies: int = 0
    mps: int = 0
    vacant: int = 0
    not_found: list[str] = field(default_factory=list)
    requests: int = 0
    stopped: str | None = None


def fetch_mps(
    engine: Engine, api: MembersAPI, *, progress: Callable[[int], None] | None = None
) -> RepsFetchResult:
    """Ask Parliament for the MP of every constituency our members live in.

    Each seat is committed as it arrives, so a dropped connection keeps what
    was fetched; the result says where it stopped.
    """
    p = postcode_table.c
    with engine.connect() as conn:
        seats = conn.execute(
            select(p.constituency_code, p.constituency_name)
            .where(p.constituency_code.is_not(None))
            .distinct()
            .order_by(p.constituency_code)
        ).all()
    if not seats:
        raise CampaignError("no constituencies known yet: run `campaign resolve` first to look up postcodes")
    result = RepsFetchResult(constituencies=len(seats))
    for code, name in seats:
        try:
            seat = api.seat(name)
            email = api.parliamentary_email(seat.member_id) if seat and seat.member_id else None
        except NetworkUnavailable as exc:
            result.stopped = str(exc)
            break
        finally:
            if progress is not None:
                progress(1)
        if seat is None:
            result.not_found.append(f"{code} {name}")
            continue
        row = {
            "constituency_code": code,
            "constituency_name": name,
            "vacant": seat.vacant,
            "name": seat.name,
            "party": seat.party,
            "email": email,
            "address_as": seat.address_as,
            "full_title": seat.full_title,
            "postal_address": None if seat.vacant else COMMONS_ADDRESS,
            "parliament_member_id": seat.member_id,
            "parliament_constituency_id": seat.parliament_constituency_id,
            "source": "api",
            "updated_at": utcnow(),
        }
        with engine.begin() as conn:
            replace_rows(conn, mp_table, "constituency_code", [row])
        if seat.vacant:
            result.vacant += 1
        else:
            result.mps += 1
    result.requests = api.client.requests_made
    with engine.begin() as conn:
        record_event(conn, "reps.fetch", **result.__dict__)
    return result


def list_mps(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(mp_table).order_by(mp_table.c.constituency_name)).all()
    out = []
    for row in rows:
        data = dict(row._mapping)
        data["updated_at"] = data["updated_at"].isoformat(timespec="seconds")
        out.append(data)
    return out
