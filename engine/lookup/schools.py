"""Schools from the DfE GIAS extract, and the rule for who employs their staff.

The rule follows the establishment type: the local authority for community
and voluntary-controlled schools, the governing body for voluntary-aided and
foundation schools, the academy trust for academies and free schools. Where
GIAS cannot tell us (independent schools, academies with no trust named), the
school is flagged, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from engine.errors import RowErrors
from engine.members.csvfile import CsvSource, header_key
from engine.members.validation import header_problems
from engine.store.events import record_event
from engine.store.models import school_table

LOCAL_AUTHORITY_TYPES = {1, 3, 7, 14, 15}
GOVERNING_BODY_TYPES = {2, 5, 12}
ACADEMY_TYPES = {6, 28, 33, 34, 35, 36, 38, 39, 40, 41, 42, 43, 44, 45, 46, 57}
PROPRIETOR_TYPES = {8, 10, 11}

_COLUMNS = {
    "URN": "urn",
    "EstablishmentName": "name",
    "TypeOfEstablishment (code)": "type_code",
    "TypeOfEstablishment (name)": "type_name",
    "EstablishmentStatus (name)": "status",
    "LA (code)": "la_code",
    "LA (name)": "la_name",
    "Trusts (code)": "trust_code",
    "Trusts (name)": "trust_name",
    "Postcode": "postcode",
    "ParliamentaryConstituency (code)": "constituency_code",
}
_KNOWN = {header_key(k): v for k, v in _COLUMNS.items()}
_HEADERS = {v: k for k, v in _COLUMNS.items()}
_REQUIRED = ("urn", "name", "type_code", "status", "la_code", "la_name", "trust_name")
_CHUNK = 5000
_URN = re.compile(r"[0-9]{1,20}")
_TYPE_CODE = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True)
class Employer:
    kind: str | None
    key: str | None
    name: str | None
    problem: str | None = None  # a Member.employer_status other than "resolved"
    detail: str | None = None


def employer_of(school: dict[str, Any]) -> Employer:
    """Apply the employer rule to one school's GIAS values."""
    code = school.get("type_code")
    type_name = school.get("type_name") or f"type {code}"
    if (school.get("status") or "").lower() == "closed":
        return Employer(None, None, None, "closed", f"{school['name']} is closed")
    if code in LOCAL_AUTHORITY_TYPES:
        la_name = school.get("la_name")
        return Employer("local_authority", f"la:{school.get('la_code')}", la_name)
    if code in GOVERNING_BODY_TYPES:
        return Employer("governing_body", f"gb:{school['urn']}", f"The Governing Body of {school['name']}")
    if code in ACADEMY_TYPES:
        trust, trust_code = school.get("trust_name"), school.get("trust_code")
        if not trust:
            return Employer(None, None, None, "no_trust", f"{type_name} with no academy trust named in GIAS")
        return Employer("academy_trust", f"trust:{trust_code or trust}", trust)
    if code in PROPRIETOR_TYPES:
        return Employer(
            None,
            None,
            None,
            "independent",
            f"{type_name}: staff are employed by the proprietor, not named in GIAS",
        )
    return Employer(None, None, None, "not_covered", f"{type_name}: no employer rule for this type")


@dataclass
class SchoolsImportResult:
    file: str
    schools: int = 0
    closed: int = 0
    by_employer_kind: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)


def import_schools(
    engine: Engine,
    path: str | Path,
    *,
    encoding: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> SchoolsImportResult:
    """Replace the schools table with the extract at `path` (GIAS files are Windows-1252)."""
    source = CsvSource(path, _KNOWN, _REQUIRED, encoding=encoding or "cp1252")
    if on_start is not None:
        on_start(source.size)
    result = SchoolsImportResult(file=str(path))
    problems: list[str] = []
    seen: set[str] = set()
    with engine.connect() as conn, conn.begin():
        # A new extract replaces the old one whole; the transaction keeps the
        # old one if anything below fails.
        conn.execute(school_table.delete())
        chunk: list[dict[str, Any]] = []
        for row in source.rows(progress):
            v = row.values
            # School and trust names reach letters and their subjects; PostgreSQL stores no NUL.
            unsafe = header_problems(v)
            if unsafe:
                problems.extend(f"{path}:{row.line}: {_HEADERS[name]}: {why}" for name, why in unsafe)
                continue
            urn = v.get("urn", "")
            # ASCII digits that fit the column: str.isdigit() also takes '²', which int() refuses,
            # and a longer run would stop the import with a database error instead of a line.
            if not _URN.fullmatch(urn):
                problems.append(f"{path}:{row.line}: URN: {urn!r} is not a URN")
                continue
            if not v.get("name"):
                problems.append(f"{path}:{row.line}: EstablishmentName: missing")
                continue
            if urn in seen:
                problems.append(f"{path}:{row.line}: URN: {urn} appears twice")
                continue
            seen.add(urn)
            raw_type = v.get("type_code", "")
            if not _TYPE_CODE.fullmatch(raw_type):
                problems.append(
                    f"{path}:{row.line}: TypeOfEstablishment (code): {raw_type!r} is not a number"
                )
                continue
            school = {name: (v.get(name) or None) for name in _COLUMNS.values()}
            school["type_code"] = int(raw_type)
            employer = employer_of(school)
            school.update(
                employer_kind=employer.kind,
                employer_key=employer.key,
                employer_name=employer.name,
                employer_problem=employer.problem,
                employer_detail=employer.detail,
            )
            if employer.kind:
                result.by_employer_kind[employer.kind] = result.by_employer_kind.get(employer.kind, 0) + 1
            elif employer.problem == "closed":
                result.closed += 1
            elif employer.problem:
                result.flagged[employer.problem] = result.flagged.get(employer.problem, 0) + 1
            chunk.append(school)
            if len(chunk) >= _CHUNK:
                conn.execute(school_table.insert(), chunk)
                result.schools += len(chunk)
                chunk = []
        if problems:
            raise RowErrors(f"{path}: {len(problems)} bad row(s); nothing imported", problems)
        if chunk:
            conn.execute(school_table.insert(), chunk)
            result.schools += len(chunk)
        record_event(conn, "schools.import", **result.__dict__)
    return result
