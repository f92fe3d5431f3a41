"""`campaign template check`: what a template uses, what it gets wrong, and who lacks what it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from engine.letters.render import check_source
from engine.letters.templating import OPTIONAL_MEMBER_FIELDS, fields_used, read_template
from engine.store.models import member_table, school_table

_SHOW = 20


def template_kind(path: Path) -> str:
    if path.name == "layout.html":
        return "layout"
    # Templates used after launch may name what they are sent about: the reply, the answer links.
    if path.parent.name == "email":
        return "questionnaire" if "questionnaire" in path.name else "email"
    return "follow_up" if "follow-up" in path.name or "chaser" in path.name else "letter"


@dataclass
class TemplateReport:
    file: str
    kind: str
    fields: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # field → {"members": count lacking it, "examples": some membership numbers}
    lacking: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_template_file(
    path: str | Path, engine: Engine | None = None, *, kind: str | None = None
) -> TemplateReport:
    """Check one template; with an engine, also count the members who lack a field it uses."""
    path = Path(path)
    source = read_template(path)
    kind = kind or template_kind(path)
    html = path.suffix == ".html"
    report = TemplateReport(file=str(path), kind=kind)
    report.problems = check_source(source, str(path), kind, html=html)
    uses = fields_used(source, str(path), html=html)
    report.fields = [{"field": u.field, "line": u.line} for u in uses]
    if engine is not None:
        for use in uses:
            condition = _lacking(use.field)
            if condition is None:
                continue
            m = member_table.c
            with engine.connect() as conn:
                count = conn.execute(
                    select(func.count()).select_from(member_table).where(condition)
                ).scalar_one()
                examples = (
                    conn.execute(
                        select(m.membership_no).where(condition).order_by(m.membership_no).limit(_SHOW)
                    )
                    .scalars()
                    .all()
                )
            if count:
                report.lacking[use.field] = {"members": count, "examples": list(examples)}
    return report


def _lacking(dotted: str) -> Any:
    """SQL condition for members who would merge an empty value for this field, or None."""
    m = member_table.c
    parts = dotted.split(".")
    if parts[0] != "member" or len(parts) < 2:
        return None
    name = parts[1]
    if name == "custom" and len(parts) == 3:
        value = m.custom[parts[2]].as_string()
        return or_(value.is_(None), value == "")
    if name == "school":
        return ~select(school_table.c.urn).where(school_table.c.urn == m.school_urn).exists()
    if name == "address":
        return or_(m.address_line1.is_(None), m.address_line1 == "")
    if name in OPTIONAL_MEMBER_FIELDS and name in m:
        return or_(m[name].is_(None), m[name] == "")
    if name == "constituency":
        return and_(m.constituency_name.is_(None))
    return None
