"""Importing the membership-system export, and reading members back.

An import is one transaction: a file with any bad row writes nothing unless
the caller asks to skip bad rows, in which case they go to a rejects file.
Rows are upserted by membership number in chunks, so memory stays flat
whatever the file's size.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ARRAY, Connection, Engine, String, any_, bindparam, func, select

from engine.errors import CampaignError, RowErrors
from engine.members.csvfile import CsvRow, CsvSource, header_key, write_csv
from engine.members.emails import EmailNotValidError, normalise_email
from engine.members.postcode import normalise_postcode
from engine.members.rights import number_hash
from engine.members.validation import header_problems
from engine.store.db import copy_values
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


# A checked member travels as a tuple (FIELDS, then the custom fields' dict, then the row hash):
# one object a row rather than a dict, for the 450,000 rows of a union's export.
_CUSTOM = len(FIELDS)
_HASH = _CUSTOM + 1
_NUMBER = FIELDS.index("membership_no")
_EMAIL = FIELDS.index("email")
_POSTCODE = FIELDS.index("postcode")
_URN = FIELDS.index("school_urn")
_N_REQUIRED = len(REQUIRED)
assert FIELDS[:_N_REQUIRED] == REQUIRED
_NARROW_AT = tuple((FIELDS.index(name), limit) for name, limit in _NARROWER.items())
# json.dumps with options builds a new encoder on every call: made once, the same text.
_DIGEST_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


@functools.lru_cache(maxsize=4096)
def _digest_json(custom: tuple[tuple[str, str], ...]) -> str:
    """The custom fields' part of the row hash; remembered, as custom columns (a grade, years in
    post) mostly hold a few values."""
    return _DIGEST_JSON(dict(custom)) if custom else "{}"


def _custom(values: dict[str, str], custom_fields: list[str]) -> dict[str, str]:
    return {name: values[name] for name in custom_fields if values.get(name)}


def _digest(cells: list[str], custom: dict[str, str]) -> str:
    """The digest of a member's values as stored (FIELDS' in order, absent ones as "", then the
    custom fields): unchanged since the first release, so that a re-import finds its rows unchanged."""
    text = "\x1f".join([*cells, _digest_json(tuple(custom.items()))])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _cell_reader(columns: list[str]) -> Callable[[dict[str, str]], list[str]]:
    """A row's values in FIELDS' order, "" for a column the file lacks."""
    if set(FIELDS) <= set(columns):
        pick = operator.itemgetter(*FIELDS)
        return lambda values: list(pick(values))
    return lambda values: [values.get(name, "") for name in FIELDS]


def _stored_as_is(row: CsvRow, cells: list[str], custom_fields: list[str], stored_hash: str) -> bool:
    """Whether the row holds exactly the values stored for its member: checked when they were
    stored, they need no checking again. Most rows of a re-import are so."""
    return not row.overflow and _digest(cells, _custom(row.values, custom_fields)) == stored_hash


def _check_row(
    row: CsvRow, cells: list[str], custom_fields: list[str]
) -> tuple[tuple[Any, ...] | None, list[tuple[str, str]]]:
    """The member's values, tidied, or the row's problems as (field, message) pairs.
    `cells`: the row's values in FIELDS' order (tidied in place)."""
    values = row.values
    # Checked before anything else reads them: a line break in a name would end up in a To
    # header, a NUL cannot be stored in PostgreSQL.
    problems = header_problems(values)
    unsafe = {name for name, _ in problems} if problems else ()
    if row.overflow:
        problems.append(("row", "more cells than the header has columns (an unquoted comma?)"))
    if not all(cells[:_N_REQUIRED]):
        problems.extend((name, "missing") for name, value in zip(REQUIRED, cells, strict=False) if not value)
    # Named field by field only when some cell is too long: most rows have none.
    if max(map(len, values.values()), default=0) > _MAX_LEN or any(
        len(cells[at]) > limit for at, limit in _NARROW_AT
    ):
        for name, value in zip(FIELDS, cells, strict=True):
            limit = _NARROWER.get(name, _MAX_LEN)
            if len(value) > limit:
                problems.append((name, f"longer than {limit} characters"))
    email = cells[_EMAIL]
    if email and "email" not in unsafe:
        try:
            cells[_EMAIL] = normalise_email(email)
        except EmailNotValidError as exc:
            problems.append(("email", f"not an address ({exc})"))
    raw_postcode = cells[_POSTCODE]
    if raw_postcode:
        postcode = normalise_postcode(raw_postcode)
        if postcode is None:
            if "postcode" not in unsafe:
                problems.append(("postcode", f"{raw_postcode!r} is not a UK postcode"))
        else:
            cells[_POSTCODE] = postcode
    if problems:
        return None, problems
    custom = _custom(values, custom_fields)
    digest = _digest(cells, custom)
    urn = cells[_URN]
    member = [cell or None for cell in cells]
    # Stored as "" rather than NULL (see Member.school_urn); resolve reads it as "no school".
    member[_URN] = urn
    member += (custom, digest)
    return tuple(member), []


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
        writer = _MemberWriter(conn, result, restore)
        cells_of = _cell_reader(source.fields)
        for batch in _batches(source.rows(progress), _CHUNK):
            # Read first: a row exactly as stored is skipped without checking it again.
            # Not looked up: a number with a NUL, which PostgreSQL refuses even in a query; the
            # checks refuse its row.
            numbers = {row.values.get("membership_no", "") for row in batch}
            existing = writer.existing({number for number in numbers if "\x00" not in number})
            chunk: list[tuple[Any, ...]] = []
            for row in batch:
                found = existing.get(row.values.get("membership_no", ""))
                cells = cells_of(row.values)
                if found is not None and _stored_as_is(row, cells, source.extra, found[1]):
                    member: tuple[Any, ...] | None = None
                    number, row_problems = row.values["membership_no"], []
                else:
                    member, row_problems = _check_row(row, cells, source.extra)
                    number = member[_NUMBER] if member is not None else None
                if number is not None:
                    seen = first_line.setdefault(number, row.line)
                    if seen != row.line:
                        row_problems = [("membership_no", f"{number} is also on line {seen}")]
                if row_problems:
                    problems.extend(_Problem(row.line, f, m, row.raw) for f, m in row_problems)
                    result.rejected += 1
                    continue
                if problems and not skip_invalid:
                    continue  # the import will be refused: only keep checking
                if member is None:
                    result.unchanged += 1
                else:
                    chunk.append(member)
            if chunk:
                writer.upsert(chunk, existing)
        if problems and not skip_invalid:
            txn.rollback()
            lines = [f"{path}:{p.line}: {p.field}: {p.message}" for p in problems]
            raise RowErrors(
                f"{path}: {result.rejected} bad row(s); nothing imported "
                "(fix them, or pass --skip-invalid to import the rest)",
                lines,
            )
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


# What an insert sets beyond the imported values, in this order after them.
_INSERT_KEYS = (*FIELDS, "custom", "row_hash", "created_at", "updated_at", "mp_status", "employer_status")


class _MemberWriter:
    """Upserts checked members chunk by chunk, inside the import's transaction."""

    def __init__(self, conn: Connection, result: ImportResult, restore: bool):
        self.conn = conn
        self.result = result
        self.restore = restore
        dialect = conn.dialect
        self.sqlite = dialect.name == "sqlite"
        self.postgresql = dialect.name == "postgresql"
        m = member_table.c
        # Each column's own bind processor, applied as Core would.
        self.to_json = m.custom.type.dialect_impl(dialect).bind_processor(dialect)
        self.to_stamp = m.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        if self.sqlite:
            # Compiled once and run on the driver: Core's per-row parameter work cost more than
            # SQLite's own insert.
            compiled = member_table.insert().compile(dialect=dialect, column_keys=list(_INSERT_KEYS))
            self.insert_sql = str(compiled)
            order = tuple(compiled.binds[key].key for key in compiled.positiontup or ())
            # The table's column order, as a rule: then the values need no reordering.
            self.insert_order = (
                None if order == _INSERT_KEYS else operator.itemgetter(*map(_INSERT_KEYS.index, order))
            )

    def existing(self, numbers: set[str]) -> dict[str, tuple[int, str, str, str]]:
        """(id, row hash, postcode, school URN) of the stored members with these numbers."""
        m = member_table.c
        if self.postgresql:
            # One array parameter: psycopg parses a statement of 2,000 placeholders afresh each time.
            wanted = m.membership_no == any_(bindparam("numbers", list(numbers), type_=ARRAY(String)))
        else:
            wanted = m.membership_no.in_(numbers)
        return {
            number: (member_id, row_hash, postcode, urn)
            for number, member_id, row_hash, postcode, urn in self.conn.execute(
                select(m.membership_no, m.id, m.row_hash, m.postcode, m.school_urn).where(wanted)
            ).all()
        }

    def upsert(self, chunk: list[tuple[Any, ...]], existing: dict[str, tuple[int, str, str, str]]) -> None:
        """Insert or update checked members; `existing` (see above) holds every stored one of them."""
        conn, result = self.conn, self.result
        chunk = _without_forgotten(conn, chunk, result, self.restore)
        now = utcnow()
        inserts: list[tuple[Any, ...]] = []
        updates: list[dict[str, Any]] = []
        for row in chunk:
            found = existing.get(row[_NUMBER])
            if found is None:
                inserts.append(row)
            elif found[1] == row[_HASH]:
                result.unchanged += 1
            else:
                update = {**_as_dict(row), "member_id": found[0], "updated_at": now}
                moved = (row[_POSTCODE], row[_URN]) != (found[2], found[3])
                update["mp_status"] = "pending" if moved else None
                updates.append(update)
        if inserts:
            self._insert(inserts, now)
            result.created += len(inserts)
        if updates:
            _apply_updates(conn, updates)
            result.updated += len(updates)

    def _insert(self, rows: list[tuple[Any, ...]], now: datetime) -> None:
        if not (self.sqlite or self.postgresql):
            extra = {
                "created_at": now,
                "updated_at": now,
                "mp_status": "pending",
                "employer_status": "pending",
            }
            self.conn.execute(member_table.insert(), [{**_as_dict(row), **extra} for row in rows])
            return
        to_json = self.to_json
        stamp = self.to_stamp(now) if self.to_stamp else now
        tail = (stamp, stamp, "pending", "pending")
        # Custom columns mostly hold a few values: each set serialised once a chunk.
        texts: dict[tuple[tuple[str, str], ...], Any] = {}
        params = []
        for row in rows:
            custom = row[_CUSTOM]
            key = tuple(custom.items())
            text = texts.get(key)
            if text is None:
                text = texts[key] = to_json(custom) if to_json else custom
            params.append((*row[:_CUSTOM], text, row[_HASH], *tail))
        if self.sqlite:
            order = self.insert_order
            self.conn.exec_driver_sql(self.insert_sql, params if order is None else list(map(order, params)))
            return
        # COPY: an INSERT a row, even pipelined, cost psycopg ten times the database's work.
        copy_values(self.conn, member_table, _INSERT_KEYS, params)


def _batches(rows: Iterator[CsvRow], size: int) -> Iterator[list[CsvRow]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    values = dict(zip(FIELDS, row, strict=False))
    values["custom"] = row[_CUSTOM]
    values["row_hash"] = row[_HASH]
    return values


def _without_forgotten(
    conn: Connection, chunk: list[tuple[Any, ...]], result: ImportResult, restore: bool
) -> list[tuple[Any, ...]]:
    """The rows of members not forgotten at their request: an older export must not bring a
    forgotten member back. With `restore`, they come back (as new members) and are counted."""
    f = forgotten_table.c
    if conn.execute(select(f.number_hash).limit(1)).first() is None:
        return chunk  # nobody forgotten (the usual case): no digest to compute
    hashes = {number_hash(row[_NUMBER]): row[_NUMBER] for row in chunk}
    found = set(conn.execute(select(f.number_hash).where(f.number_hash.in_(hashes))).scalars())
    if not found:
        return chunk
    if restore:
        conn.execute(forgotten_table.delete().where(f.number_hash.in_(found)))
        result.restored += len(found)
        return chunk
    result.forgotten += len(found)
    skipped = {hashes[h] for h in found}
    return [row for row in chunk if row[_NUMBER] not in skipped]


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
