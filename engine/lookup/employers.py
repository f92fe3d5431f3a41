"""The union's employer contact directory, and the employers it is missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from engine.errors import RowErrors
from engine.members.csvfile import CsvSource
from engine.members.emails import EmailNotValidError, normalise_email
from engine.members.validation import header_problems
from engine.store.db import replace_rows
from engine.store.events import record_event
from engine.store.models import employer_table, member_table, utcnow

KINDS = ("local_authority", "governing_body", "academy_trust", "other")
_KNOWN = {
    "employerkey": "employer_key",
    "key": "employer_key",
    "name": "name",
    "employername": "name",
    "kind": "kind",
    "type": "kind",
    "email": "email",
    "emailaddress": "email",
    "postaladdress": "postal_address",
    "address": "postal_address",
    "salutation": "salutation",
    "dear": "salutation",
}
_REQUIRED = ("employer_key", "name")


@dataclass
class ContactsImportResult:
    file: str
    contacts: int = 0
    without_email: int = 0


def import_contacts(engine: Engine, path: str | Path, *, encoding: str | None = None) -> ContactsImportResult:
    """Upsert the contact directory by employer key; a file with bad rows writes nothing."""
    source = CsvSource(path, _KNOWN, _REQUIRED, encoding=encoding)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    now = utcnow()
    for row in source.rows():
        v = row.values
        where = f"{path}:{row.line}"
        # Names reach To headers; addresses may break lines, but hold no other control character.
        unsafe = header_problems(v, multiline=("postal_address",))
        problems.extend(f"{where}: {name}: {problem}" for name, problem in unsafe)
        if unsafe:
            continue
        key = v.get("employer_key", "")
        if not key:
            problems.append(f"{where}: employer_key: missing")
        elif key in seen:
            problems.append(f"{where}: employer_key: {key} is also on line {seen[key]}")
        seen.setdefault(key, row.line)
        if not v.get("name"):
            problems.append(f"{where}: name: missing")
        kind = v.get("kind") or None
        if kind and kind not in KINDS:
            problems.append(f"{where}: kind: {kind!r} is not one of {', '.join(KINDS)}")
        email = v.get("email") or None
        if email:
            try:
                email = normalise_email(email)
            except EmailNotValidError as exc:
                problems.append(f"{where}: email: not an address ({exc})")
        # Addresses are one cell; people separate lines with newlines or "|" or ";".
        address = v.get("postal_address") or ""
        lines = [part.strip() for part in address.replace("|", "\n").replace(";", "\n").splitlines()]
        if not email and not any(lines):
            problems.append(f"{where}: email: no email and no postal address: nowhere to write")
        rows.append(
            {
                "employer_key": key,
                "name": v.get("name"),
                "kind": kind,
                "email": email,
                "postal_address": "\n".join(line for line in lines if line) or None,
                "salutation": v.get("salutation") or None,
                "updated_at": now,
            }
        )
    if problems:
        raise RowErrors(f"{path}: {len(problems)} problem(s); nothing imported", problems)
    result = ContactsImportResult(
        file=str(path), contacts=len(rows), without_email=sum(1 for r in rows if not r["email"])
    )
    with engine.begin() as conn:
        replace_rows(conn, employer_table, "employer_key", rows)
        record_event(conn, "employers.import", **result.__dict__)
    return result


def employer_gaps(engine: Engine) -> list[dict[str, Any]]:
    """Employers that have members but no contact, largest membership first."""
    m, c = member_table.c, employer_table.c
    members = func.count().label("members")
    stmt = (
        select(m.employer_key, func.max(m.employer_name).label("name"), members)
        .select_from(member_table.outerjoin(employer_table, c.employer_key == m.employer_key))
        .where(m.employer_key.is_not(None), c.employer_key.is_(None))
        .group_by(m.employer_key)
        .order_by(members.desc(), m.employer_key)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]
