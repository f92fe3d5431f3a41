"""Importing the membership-system export, and reading members back.

An import is one transaction: a file with any bad row writes nothing unless
the caller asks to skip bad rows, in which case they go to a rejects file.
Rows are upserted by membership number in chunks, so memory stays flat
whatever the file's size.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select

from engine.errors import CampaignError, RowErrors
from engine.members.csvfile import CsvRow, CsvSource, header_key, write_csv
from engine.members.emails import EmailNotValidError, normalise_email
from engine.members.postcode import normalise_postcode
from engine.members.rights import number_hash
from engine.members.validation import header_problems
from engine.store.db import insert_rows
from engine.store.events import record_event
from engine.store.models import forgotten_table, member_table, utcnow

REQUIRED = ("membership_no", "first_name", "last_name", "email", "postcode")
# school_urn is optional: supply staff, central staff and retired members have no school. It stays
# first among the optional fields so that FIELDS, and so every stored row_hash, keep their order.
OPTIONAL = (
    "school_urn",
    "address_line1",
    "address_line2",
    "address_line3",
    "town",
    "role",
    "branch",
    "region",
)
FIELDS = REQUIRED + OPTIONAL
_KNOWN = {header_key(name): name for name in FIELDS}
# Common spellings from membership systems for the same fields.
_KNOWN.update(
    {
        "membershipnumber": "membership_no",
        "memberno": "membership_no",
        "forename": "first_name",
        "firstname": "first_name",
        "surname": "last_name",
        "emailaddress": "email",
        "urn": "school_urn",
        "schoolurn": "school_urn",
        "address1": "address_line1",
        "address2": "address_line2",
        "address3": "address_line3",
    }
)
# Columns whose change invalidates what `resolve` found for the member.
_RESOLVE_INPUTS = ("postcode", "school_urn")
_CHUNK = 2000
_MAX_LEN = 200
# Columns narrower than that (see Member): PostgreSQL refuses a longer value with an error that
# would stop the import without naming the row.
_NARROWER = {"membership_no": 40, "school_urn": 20}


@dataclass
class ImportResult:
    file: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    # Rows of members forgotten at their request: skipped, or brought back with `restore`.
    forgotten: int = 0
    restored: int = 0
    rejects_file: str | None = None
    custom_fields: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Problem:
    line: int
    field: str
    message: str
    raw: list[str]


def _check_row(row: CsvRow, custom_fields: list[str]) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The member's values, tidied, or the row's problems as (field, message) pairs."""
    values = row.values
    # Checked before anything else reads them: a line break in a name would end up in a To
    # header, a NUL cannot be stored in PostgreSQL.
    problems = header_problems(values)
    unsafe = {name for name, _ in problems}
    if row.overflow:
        problems.append(("row", "more cells than the header has columns (an unquoted comma?)"))
    for name in REQUIRED:
        if not values.get(name):
            problems.append((name, "missing"))
    # Named field by field only when some cell is too long: most rows have none.
    if max(map(len, values.values()), default=0) > _MAX_LEN or any(
        len(values.get(name) or "") > limit for name, limit in _NARROWER.items()
    ):
        for name in FIELDS:
            limit = _NARROWER.get(name, _MAX_LEN)
            if len(values.get(name) or "") > limit:
                problems.append((name, f"longer than {limit} characters"))
    email = values.get("email")
    if email and "email" not in unsafe:
        try:
            email = normalise_email(email)
        except EmailNotValidError as exc:
            problems.append(("email", f"not an address ({exc})"))
    raw_postcode = values.get("postcode")
    postcode = normalise_postcode(raw_postcode) if raw_postcode else None
    if raw_postcode and postcode is None and "postcode" not in unsafe:
        problems.append(("postcode", f"{raw_postcode!r} is not a UK postcode"))
    if problems:
        return None, problems
    member = {name: values.get(name) or None for name in FIELDS}
    # Stored as "" rather than NULL (see Member.school_urn); resolve reads it as "no school".
    member["school_urn"] = member["school_urn"] or ""
    member["email"] = email
    member["postcode"] = postcode
    member["custom"] = {name: values[name] for name in custom_fields if values.get(name)}
    member["row_hash"] = _digest(member)
    return member, []


def _digest(member: dict[str, Any]) -> str:
    parts = [member[name] or "" for name in FIELDS]
    custom = member["custom"]
    parts.append(json.dumps(custom, sort_keys=True, ensure_ascii=False) if custom else "{}")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def import_members(
    engine: Engine,
    path: str | Path,
    *,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    encoding: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    restore: bool = False,
) -> ImportResult:
    """Upsert every member in the CSV at `path` by membership number.

    Members forgotten at their request (`members forget`) are skipped and counted, unless
    `restore` brings them back.

    Raises RowErrors (writing nothing) when a row is bad and `skip_invalid` is
    false; otherwise bad rows are written to `rejects_path` with their reasons.
    """
    source = CsvSource(path, _KNOWN, REQUIRED, encoding=encoding, keep_extra=True)
    if on_start is not None:
        on_start(source.size)
    result = ImportResult(file=str(path), custom_fields=list(source.extra))
    clashes = sorted(set(source.extra) & set(FIELDS))
    if clashes:
        source.close()
        raise CampaignError(f"{path}:1: column name(s) clash with member fields: {', '.join(clashes)}")
    problems: list[_Problem] = []
    first_line: dict[str, int] = {}
    with engine.connect() as conn, conn.begin() as txn:
        chunk: list[dict[str, Any]] = []
        for row in source.rows(progress):
            member, row_problems = _check_row(row, source.extra)
            if member is not None:
                number = member["membership_no"]
                seen = first_line.setdefault(number, row.line)
                if seen != row.line:
                    row_problems = [("membership_no", f"{number} is also on line {seen}")]
                    member = None
            if member is None:
                problems.extend(_Problem(row.line, f, m, row.raw) for f, m in row_problems)
                result.rejected += 1
                continue
            if problems and not skip_invalid:
                continue  # the import will be refused: only keep checking
            chunk.append(member)
            if len(chunk) >= _CHUNK:
                _upsert(conn, chunk, result, restore)
                chunk = []
        if problems and not skip_invalid:
            txn.rollback()
            lines = [f"{path}:{p.line}: {p.field}: {p.message}" for p in problems]
            raise RowErrors(
                f"{path}: {result.rejected} bad row(s); nothing imported "
                "(fix them, or pass --skip-invalid to import the rest)",
                lines,
            )
        if chunk:
            _upsert(conn, chunk, result, restore)
        if problems:
            target = Path(rejects_path) if rejects_path else _default_rejects(Path(path))
            _write_rejects(target, source.header, problems)
            result.rejects_file = str(target)
        record_event(conn, "members.import", **result.as_dict())
    return result


def _default_rejects(path: Path) -> Path:
    return path.with_name(path.stem + ".rejects.csv")


def _write_rejects(target: Path, header: list[str], problems: list[_Problem]) -> None:
    """Write the rejected rows with their reasons, atomically."""
    rows = ([p.line, p.field, p.message, *p.raw] for p in problems)
    write_csv(target, itertools.chain([["line", "field", "problem", *header]], rows))


def _upsert(
    conn: Connection, chunk: list[dict[str, Any]], result: ImportResult, restore: bool = False
) -> None:
    m = member_table.c
    chunk = _without_forgotten(conn, chunk, result, restore)
    numbers = [row["membership_no"] for row in chunk]
    existing = {
        number: (member_id, row_hash, postcode, urn)
        for number, member_id, row_hash, postcode, urn in conn.execute(
            select(m.membership_no, m.id, m.row_hash, m.postcode, m.school_urn).where(
                m.membership_no.in_(numbers)
            )
        )
    }
    now = utcnow()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in chunk:
        found = existing.get(row["membership_no"])
        if found is None:
            inserts.append(
                {
                    **row,
                    "created_at": now,
                    "updated_at": now,
                    "mp_status": "pending",
                    "employer_status": "pending",
                }
            )
        elif found[1] == row["row_hash"]:
            result.unchanged += 1
        else:
            update = {**row, "member_id": found[0], "updated_at": now}
            moved = (row["postcode"], row["school_urn"]) != (found[2], found[3])
            update["mp_status"] = "pending" if moved else None
            updates.append(update)
    if inserts:
        # Compiled once and run on the driver: Core's per-row parameter work cost more than
        # SQLite's own insert.
        insert_rows(conn, member_table, inserts)
        result.created += len(inserts)
    if updates:
        _apply_updates(conn, updates)
        result.updated += len(updates)


def _without_forgotten(
    conn: Connection, chunk: list[dict[str, Any]], result: ImportResult, restore: bool
) -> list[dict[str, Any]]:
    """The rows of members not forgotten at their request: an older export must not bring a
    forgotten member back. With `restore`, they come back (as new members) and are counted."""
    hashes = {number_hash(row["membership_no"]): row["membership_no"] for row in chunk}
    f = forgotten_table.c
    found = set(conn.execute(select(f.number_hash).where(f.number_hash.in_(hashes))).scalars())
    if not found:
        return chunk
    if restore:
        conn.execute(forgotten_table.delete().where(f.number_hash.in_(found)))
        result.restored += len(found)
        return chunk
    result.forgotten += len(found)
    skipped = {hashes[h] for h in found}
    return [row for row in chunk if row["membership_no"] not in skipped]


def _apply_updates(conn: Connection, updates: list[dict[str, Any]]) -> None:
    m = member_table.c
    columns = [*FIELDS, "custom", "row_hash", "updated_at"]
    plain = [u for u in updates if u["mp_status"] is None]
    moved = [u for u in updates if u["mp_status"] is not None]
    values = {name: bindparam(name) for name in columns}
    stmt = member_table.update().where(m.id == bindparam("member_id"))
    if plain:
        conn.execute(stmt.values(values), [{k: u[k] for k in (*columns, "member_id")} for u in plain])
    if moved:
        # The old answer no longer applies; `resolve` fills these in again.
        reset = {
            **values,
            "mp_status": "pending",
            "mp_detail": None,
            "constituency_code": None,
            "constituency_name": None,
            "employer_status": "pending",
            "employer_detail": None,
            "employer_key": None,
            "employer_name": None,
            "resolved_at": None,
        }
        conn.execute(stmt.values(reset), [{k: u[k] for k in (*columns, "member_id")} for u in moved])


def member_to_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data.pop("row_hash", None)
    for key in ("created_at", "updated_at", "resolved_at", "mail_opt_out_at"):
        if data.get(key) is not None:
            data[key] = data[key].isoformat(timespec="seconds")
    return data


def iter_members(
    engine: Engine,
    *,
    mp_status: str | None = None,
    employer_status: str | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Members in membership-number order, streamed."""
    m = member_table.c
    stmt = select(member_table).order_by(m.membership_no)
    if mp_status:
        stmt = stmt.where(m.mp_status == mp_status)
    if employer_status:
        stmt = stmt.where(m.employer_status == employer_status)
    if limit:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=1000).execute(stmt):
            yield member_to_dict(row)


def get_member(engine: Engine, membership_no: str) -> dict[str, Any]:
    m = member_table.c
    with engine.connect() as conn:
        row = conn.execute(select(member_table).where(m.membership_no == membership_no)).first()
    if row is None:
        raise CampaignError(f"no member with membership number {membership_no!r}")
    return member_to_dict(row)


def count_members(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(member_table)).scalar_one()


def set_mail_opt_out(engine: Engine, membership_no: str, opt_out: bool = True) -> dict[str, Any]:
    """Record (or undo) a member's request for no more campaign mail."""
    m = member_table.c
    with engine.begin() as conn:
        found = conn.execute(
            member_table.update()
            .where(m.membership_no == membership_no)
            .values(mail_opt_out_at=utcnow() if opt_out else None)
        ).rowcount
        if not found:
            raise CampaignError(f"no member with membership number {membership_no!r}")
        record_event(conn, "members.opt_out" if opt_out else "members.opt_in", membership_no=membership_no)
    return get_member(engine, membership_no)
