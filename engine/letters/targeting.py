"""Which members a wave writes for: the nations it covers and its --where on imported columns
(and, in `escalation`, what became of their letter in an earlier wave).

A member outside either is left out of the wave with the reason, never
silently: launch counts them, and `wave status` shows them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from engine.errors import CampaignError
from engine.members.csvfile import header_key
from engine.members.importer import FIELDS
from engine.store.models import member_table

NATIONS = ("england", "wales", "scotland", "northern_ireland")
NATION_NAMES = {
    "england": "England",
    "wales": "Wales",
    "scotland": "Scotland",
    "northern_ireland": "Northern Ireland",
}
_NATION_SPELLINGS = {
    **{header_key(n): n for n in NATIONS},
    "ni": "northern_ireland",
    "uk": "all",
    "all": "all",
}
# The first letter of a GSS code names its nation (constituencies E14, W07, S14, N05; councils E06…, W06…).
_GSS = re.compile(r"^([EWSN])\d{8}$")
_GSS_NATIONS = {"E": "england", "W": "wales", "S": "scotland", "N": "northern_ireland"}
# GIAS numbers the Welsh local authorities 660 to 681; its other LA codes are English.
_WELSH_LA_CODES = range(660, 682)

# A letter template may say which nations its waves reach, on a line of its own near the top:
#   {# nations: england #}
# A Jinja comment, so the letter never shows it and `template check` accepts it.
_FRONT_MATTER = re.compile(r"^\s*\{#\s*nations\s*:\s*(.*?)\s*#\}\s*$", re.IGNORECASE)
_FRONT_MATTER_LINES = 5

# Columns of the member table that --where may name: the imported ones and what `resolve` found.
WHERE_COLUMNS = (
    *FIELDS,
    "constituency_code",
    "constituency_name",
    "employer_key",
    "employer_name",
    "mp_status",
    "employer_status",
)
# A wave's filters hold --where as {column: [values]} and, under this key (never a column's: see
# known_columns), the --after rule of `escalation`.
AFTER_KEY = "@after"
_WHERE_ALIASES = {"school": "school_urn", "urn": "school_urn", "constituency": "constituency_name"}


def parse_nations(text: str, where: str = "--nations") -> list[str] | None:
    """'england,wales' → ['england', 'wales']; 'all' → None (every nation)."""
    chosen: set[str] = set()
    for part in re.split(r"[,|]", text):
        if not part:
            continue
        nation = _NATION_SPELLINGS.get(header_key(part))
        if nation is None:
            raise CampaignError(
                f"{where}: {part!r} is not a nation: give england, wales, scotland, "
                "northern-ireland or all (several separated by commas)"
            )
        if nation == "all":
            return None
        chosen.add(nation)
    if not chosen:
        raise CampaignError(f"{where}: name at least one nation, or all")
    if len(chosen) == len(NATIONS):
        return None
    return [n for n in NATIONS if n in chosen]


def template_nations(source: str, filename: str) -> list[str] | None:
    """The nations a letter template's `{# nations: … #}` line names; None (all) without one."""
    for number, line in enumerate(source.splitlines()[:_FRONT_MATTER_LINES], start=1):
        match = _FRONT_MATTER.match(line)
        if match:
            return parse_nations(match.group(1), f"{filename}:{number}: nations")
    return None


def nations_label(nations: list[str] | None) -> str:
    if not nations:
        return "all nations"
    return ", ".join(NATION_NAMES[n] for n in nations)


def nation_of_code(code: str | None) -> str | None:
    """The nation of a GSS code (constituency or council), or None for none or 'not applicable'."""
    match = _GSS.match((code or "").strip().upper())
    if match is None or code.strip().endswith("99999999"):  # type: ignore[union-attr]
        return None
    return _GSS_NATIONS[match.group(1)]


def school_nation(constituency_code: str | None, la_code: str | None) -> str | None:
    """A school's nation from GIAS: its constituency's GSS code, else its LA code."""
    nation = nation_of_code(constituency_code)
    if nation is None and la_code and la_code.strip().isdigit():
        nation = "wales" if int(la_code) in _WELSH_LA_CODES else "england"
    return nation


def member_nation(row: Mapping[str, Any], target_kind: str) -> str | None:
    """Where a member counts for a wave: the school's nation for an employer wave, else the constituency's."""
    if target_kind == "employer":
        return school_nation(row["school_constituency_code"], row["school_la_code"])
    return nation_of_code(row["constituency_code"])


def outside_nations(row: Mapping[str, Any], target_kind: str, nations: list[str] | None) -> str | None:
    """Why a member is outside the wave's nations (the detail shown), or None when inside or unknown."""
    if not nations:
        return None
    nation = member_nation(row, target_kind)
    if nation is None:
        # MP and employer waves leave such a member out as unresolved; a fixed wave's letter
        # (or a pledge) would otherwise go for a member who may be anywhere.
        if target_kind in ("fixed", "pledge"):
            return "nation not known: the member's postcode is not resolved to a constituency"
        return None
    if nation in nations:
        return None
    where = "school" if target_kind == "employer" else "constituency"
    return f"{where} in {NATION_NAMES[nation]}; the wave covers {nations_label(nations)}"


# ---- --where ------------------------------------------------------------------


def known_columns(conn: Connection) -> dict[str, str]:
    """Every column --where may name, by its header_key: member columns and imported custom fields."""
    columns: dict[str, str] = {}
    # Not DISTINCT: PostgreSQL cannot compare JSON values.
    for (custom,) in conn.execute(select(member_table.c.custom)):
        for key in custom or {}:
            if key != AFTER_KEY:
                columns.setdefault(header_key(key), key)
    columns.update({header_key(name): name for name in WHERE_COLUMNS})
    columns.update(_WHERE_ALIASES)
    return columns


def parse_where(items: Iterable[str], columns: Mapping[str, str]) -> dict[str, list[str]]:
    """`role=headteacher,deputy`, `region=London|South East`, `school=` → {column: [values]}.

    Values of one column are alternatives; several columns must all match; an
    empty value matches an empty column. A comma part without `=` is one more
    value for the column before it, so `branch=Leeds,region=London` still names two.
    """
    filters: dict[str, list[str]] = {}
    for item in items:
        key: str | None = None
        for part in item.split(","):
            name, eq, values = part.partition("=")
            if not eq:
                if not part.strip():
                    continue
                if key is None:
                    raise CampaignError(
                        f"--where: {part.strip()!r} is not COLUMN=VALUE (e.g. role=headteacher,deputy)"
                    )
                filters[key].extend(v.strip() for v in part.split("|") if v.strip())
                continue
            if not name.strip():
                raise CampaignError(f"--where: {part.strip()!r} names no column")
            key = columns.get(header_key(name))
            if key is None:
                raise CampaignError(
                    f"--where: no column {name.strip()!r} among the members' columns "
                    "(see `campaign members show` for the imported ones)"
                )
            chosen = [v.strip() for v in values.split("|") if v.strip()]
            # COLUMN= alone: members whose column is empty.
            filters.setdefault(key, []).extend(chosen or [""])
    return filters


def where_filters(filters: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The --where part of a wave's filters."""
    return {k: v for k, v in (filters or {}).items() if k != AFTER_KEY}


def where_label(filters: Mapping[str, Any]) -> str:
    return " and ".join(
        f"{k} is " + " or ".join(repr(v) if v else "empty" for v in values)
        for k, values in where_filters(filters).items()
    )


def _value(row: Mapping[str, Any], column: str) -> str:
    value = row[column] if column in WHERE_COLUMNS else (row["custom"] or {}).get(column)
    return "" if value is None else str(value).strip().lower()


def outside_where(row: Mapping[str, Any], filters: Mapping[str, Any] | None) -> str | None:
    """The first --where column this member does not match (the detail shown), or None."""
    for column, values in where_filters(filters).items():
        if _value(row, column) not in {v.lower() for v in values}:
            return f"{column} is not " + " or ".join(repr(v) if v else "empty" for v in values)
    return None
