"""Members as staff look them up: found by number, name or email, and one member's letters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, or_, select

from engine.errors import CampaignError
from engine.members.rights import is_forgotten
from engine.store.models import letter_table, member_table, wave_table

# A search shows at most this many members: staff narrow it rather than page through members.
FOUND_AT_MOST = 50


def find_members(engine: Engine, query: str, limit: int = FOUND_AT_MOST) -> list[dict[str, Any]]:
    """Members whose number is `query`, or whose name or email address contains it (any case),
    by surname; forgotten members are never found."""
    words = " ".join(query.replace("\0", "").split())[:120]
    if not words:
        return []
    m = member_table.c
    conditions = [m.membership_no == words, func.lower(m.email) == words.lower()]
    full_name = func.lower(m.first_name + " " + m.last_name)
    conditions.append(full_name.contains(words.lower(), autoescape=True))
    if "@" not in words:
        conditions.append(func.lower(m.email).contains(words.lower(), autoescape=True))
    stmt = (
        select(
            m.membership_no,
            m.first_name,
            m.last_name,
            m.email,
            m.region,
            m.branch,
            m.employer_name,
        )
        .where(or_(*conditions), m.forgotten_at.is_(None))
        .order_by(m.last_name, m.first_name, m.membership_no)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(stmt)]


def member_overview(engine: Engine, membership_no: str) -> dict[str, Any]:
    """One member as staff see them: their details and every letter of theirs, newest wave first."""
    m, lt = member_table.c, letter_table.c
    number = membership_no.strip()[:40]
    with engine.connect() as conn:
        member = conn.execute(select(member_table).where(m.membership_no == number)).first()
        if member is None:
            if is_forgotten(conn, number):
                # Their number is kept only as a digest, to say so; nothing else of theirs is.
                return {"membership_no": number, "forgotten": True, "member": {}, "letters": []}
            raise CampaignError(f"no member with membership number {number!r}")
        letters = [
            dict(row._mapping)
            for row in conn.execute(
                select(
                    lt.reference,
                    lt.kind,
                    lt.state,
                    lt.target_kind,
                    lt.target_key,
                    lt.target_name,
                    lt.sent_at,
                    lt.replied_at,
                    wave_table.c.id.label("wave_id"),
                    wave_table.c.name.label("wave"),
                )
                .join(wave_table, wave_table.c.id == lt.wave_id)
                .where(lt.member_id == member.id)
                .order_by(lt.wave_id.desc(), lt.id)
            )
        ]
    details = dict(member._mapping)
    return {
        "membership_no": details["membership_no"],
        "forgotten": details["forgotten_at"] is not None,
        "member": {
            key: details[key]
            for key in (
                "first_name",
                "last_name",
                "email",
                "postcode",
                "role",
                "region",
                "branch",
                "constituency_name",
                "employer_name",
                "mail_opt_out_at",
            )
        },
        "letters": letters,
    }
