"""The reports a campaign is steered by: each wave's funnel, where it stands by region, branch,
constituency and employer, and how each employer and MP answers.

Everything is counted in the database (GROUP BY), never by loading letters: a wave can hold
450,000. Shares are of the letters made, so stages read as "of the members we wrote for".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, and_, case, func, literal, select

from engine.errors import CampaignError
from engine.letters.launch import left_out
from engine.letters.working_days import working_days_between
from engine.store.models import (
    STATE_MEANINGS,
    inbound_table,
    letter_table,
    member_table,
    outbox_table,
    wave_table,
)

# The funnel's stages, in order, each with what it counts; and what sits beside it.
FUNNEL = (
    ("letters", "letters made at launch (members taking part)"),
    ("invited", "invitation sent to the member"),
    ("opened", "member opened their page"),
    ("confirmed", "member chose to send (by us or themselves)"),
    ("sent", "letter went to its target (by us, or by the member themselves)"),
    ("replied", "its target replied"),
    ("followed_up", "a follow-up letter was drafted after the reply"),
)
# A pledge wave's answers sit beside its funnel too (its "confirmed" counts the pledges).
BESIDE = ("opted_out", "unreachable", "bounced", "failed", "overdue", "pledged", "declined")
SPLITS = {
    "region": member_table.c.region,
    "branch": member_table.c.branch,
    "constituency": member_table.c.constituency_name,
    "employer": member_table.c.employer_name,
}
_WENT = ("sent", "self_sent", "replied", "followed_up", "overdue", "bounced")


def _waves(engine: Engine, name: str | None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        stmt = select(wave_table).where(wave_table.c.status == "launched").order_by(wave_table.c.id)
        if name is not None:
            stmt = select(wave_table).where(wave_table.c.name == name)
        waves = [dict(r._mapping) for r in conn.execute(stmt)]
    if name is not None and not waves:
        raise CampaignError(f"no wave named {name!r} (campaign wave list shows them)")
    return waves


def _stage_columns() -> list[Any]:
    lt = letter_table.c
    invited = (
        select(outbox_table.c.id)
        .where(
            outbox_table.c.letter_id == lt.id,
            outbox_table.c.kind == "invitation",
            outbox_table.c.status.in_(("sent", "uncertain")),
        )
        .exists()
    )
    # A correlated EXISTS per row is fine: each reads one index entry.
    f = letter_table.alias("fu")
    follow_up = select(f.c.id).where(f.c.parent_id == lt.id, f.c.kind == "follow_up").exists()

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    return [
        func.count().label("letters"),
        count(invited).label("invited"),
        count(lt.opened_at.is_not(None)).label("opened"),
        # A pledge declined is, like an opt-out, a decision not to act.
        count(and_(lt.decided_at.is_not(None), lt.state.not_in(("opted_out", "declined")))).label(
            "confirmed"
        ),
        count(lt.state.in_(_WENT) | lt.sent_at.is_not(None)).label("sent"),
        count(lt.replied_at.is_not(None)).label("replied"),
        count(follow_up).label("followed_up"),
        *(count(lt.state == state).label(state) for state in BESIDE if state != "overdue"),
        count(lt.overdue_at.is_not(None)).label("overdue"),
    ]


def _row(values: Any) -> dict[str, int]:
    return {key: int(values[key] or 0) for key in values}


def funnel(engine: Engine, wave: str | None = None, by: str | None = None) -> dict[str, Any]:
    """A wave's funnel (or every launched wave's), as counts and shares of the letters made,
    with what was left out at launch and why; with `by`, one row per region, branch,
    constituency or employer."""
    if by is not None and by not in SPLITS:
        raise CampaignError(f"--by: {by!r} is not one of {', '.join(SPLITS)}")
    waves = _waves(engine, wave)
    lt = letter_table.c
    ids = [w["id"] for w in waves]
    base = (
        select(*_stage_columns())
        .select_from(letter_table.join(member_table, member_table.c.id == lt.member_id))
        .where(lt.wave_id.in_(ids), lt.kind == "letter")
    )
    with engine.connect() as conn:
        totals = _row(conn.execute(base).mappings().one())
        rows = []
        if by is not None:
            key = SPLITS[by]
            for values in conn.execute(
                base.add_columns(key.label("key")).group_by(key).order_by(key)
            ).mappings():
                row = _row({k: values[k] for k in values if k != "key"})
                rows.append({by: values["key"] or "(not known)", **row})
    made = totals["letters"]
    stages = [
        {"stage": name, "meaning": meaning, "count": totals[name], "share": _share(totals[name], made)}
        for name, meaning in FUNNEL
    ]
    beside = [
        {
            "state": state,
            "meaning": STATE_MEANINGS.get(state, ""),
            "count": totals[state],
            "share": _share(totals[state], made),
        }
        for state in BESIDE
    ]
    left: dict[str, int] = {}
    for w in waves:
        for reason, count in left_out(engine, w["name"]).items():
            left[reason] = left.get(reason, 0) + count
    return {
        "wave": wave or "all launched waves",
        "waves": [w["name"] for w in waves],
        "eligible": made + sum(left.values()),
        "left_out": left,
        "funnel": stages,
        "beside": beside,
        "by": by,
        "rows": rows,
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


# ---- how targets answer -------------------------------------------------------------


@dataclass
class _Target:
    key: str
    name: str
    letters: int = 0
    went: int = 0
    replied: int = 0
    overdue: int = 0


def responsiveness(
    engine: Engine, wave: str | None = None, sort: str = "silent", target: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per employer or MP written to: letters, how many went, were answered and are
    overdue, the median working days to an answer, and the answers by outcome. Sorted with the
    most silent first (`sort`: silent, slowest, name, letters). `target` (kind, key): that one's
    row only, read through the letters' (wave, target) index."""
    sorts = ("silent", "slowest", "name", "letters")
    if sort not in sorts:
        raise CampaignError(f"--sort: {sort!r} is not one of {', '.join(sorts)}")
    waves = _waves(engine, wave)
    if wave is not None and waves[0]["target"] == "pledge":
        raise CampaignError(
            f"{wave!r} is a pledge wave: it writes to no one, so no target can answer "
            "(its answers by region or employer: campaign pledges WAVE --by region)"
        )
    lt = letter_table.c
    # A pledge writes to no one: such waves have no targets to rank.
    ids = [w["id"] for w in waves if w["target"] != "pledge"]
    key = func.coalesce(lt.target_key, literal("fixed"))
    mine = [lt.wave_id.in_(ids), lt.kind == "letter"]
    if target is not None:
        mine += [lt.target_kind == target[0], key == target[1]]
        if target[1] != "fixed":
            # The bare column, so the (wave_id, target_key) index is used.
            mine.append(lt.target_key == target[1])
    targets: dict[tuple[str, str], _Target] = {}
    with engine.connect() as conn:
        went = lt.state.in_(_WENT) | lt.sent_at.is_not(None)
        for values in conn.execute(
            select(
                lt.target_kind,
                key.label("key"),
                func.max(lt.target_name).label("name"),
                func.count().label("letters"),
                func.sum(case((went, 1), else_=0)).label("went"),
                func.sum(case((lt.replied_at.is_not(None), 1), else_=0)).label("replied"),
                func.sum(case((lt.overdue_at.is_not(None) & lt.replied_at.is_(None), 1), else_=0)).label(
                    "overdue"
                ),
            )
            .where(*mine)
            .group_by(lt.target_kind, key)
        ).mappings():
            targets[(values["target_kind"], values["key"])] = _Target(
                values["key"],
                values["name"],
                int(values["letters"]),
                int(values["went"] or 0),
                int(values["replied"] or 0),
                int(values["overdue"] or 0),
            )
        delays: dict[tuple[str, str], list[int]] = {}
        for kind, target, sent_at, replied_at in conn.execute(
            select(lt.target_kind, key, lt.sent_at, lt.replied_at).where(
                *mine, lt.replied_at.is_not(None), lt.sent_at.is_not(None)
            )
        ):
            delays.setdefault((kind, target), []).append(
                working_days_between(_day(sent_at), _day(replied_at))
            )
        i = inbound_table.c
        outcome = func.coalesce(i.outcome, i.suggested_outcome, literal("not coded"))
        outcomes: dict[tuple[str, str], dict[str, int]] = {}
        for kind, target, value, count in conn.execute(
            select(lt.target_kind, key, outcome, func.count())
            .select_from(inbound_table.join(letter_table, lt.id == i.letter_id))
            .where(*mine, i.kind == "reply")
            .group_by(lt.target_kind, key, outcome)
        ):
            outcomes.setdefault((kind, target), {})[value] = count
    rows = []
    for (kind, target), found in targets.items():
        spent = delays.get((kind, target), [])
        rows.append(
            {
                "kind": kind,
                "key": found.key,
                "name": found.name,
                "letters": found.letters,
                "went": found.went,
                "replied": found.replied,
                "silent": found.went - found.replied,
                "overdue": found.overdue,
                "reply_share": _share(found.replied, found.went),
                "median_working_days": statistics.median(spent) if spent else None,
                "outcomes": outcomes.get((kind, target), {}),
            }
        )
    order = {
        "silent": lambda r: (-(r["silent"] / r["went"] if r["went"] else 0), -r["went"], r["name"]),
        "slowest": lambda r: (-(r["median_working_days"] or -1), r["name"]),
        "name": lambda r: (r["name"],),
        "letters": lambda r: (-r["letters"], r["name"]),
    }[sort]
    return sorted(rows, key=order)


def _day(moment: datetime) -> date:
    return moment.date()


def replies_by_day(engine: Engine, wave: str) -> dict[str, Any]:
    """For a chart: letters sent and replies received per day, and the reply deadline."""
    [found] = _waves(engine, wave)
    lt = letter_table.c
    mine = (lt.wave_id == found["id"]) & (lt.kind == "letter")
    with engine.connect() as conn:
        sent = list(conn.execute(select(lt.sent_at).where(mine, lt.sent_at.is_not(None))).scalars())
        replied = list(conn.execute(select(lt.replied_at).where(mine, lt.replied_at.is_not(None))).scalars())
    return {"wave": wave, "sent": sent, "replied": replied, "reply_days": found["reply_days"]}
