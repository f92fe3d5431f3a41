"""Browsing what a campaign wrote: a wave's letters filtered by state, region, employer and reply
outcome, a page at a time; and one employer's or MP's letters and replies across the waves.

Only a wave's first letters are listed (kind `letter`, as the funnel counts them): follow-ups and
chasers are answers to these. Every figure is counted in the database and every list is read a
page at a time (LIMIT/OFFSET over the wave's index), because a wave may hold 100,000 letters.
How each target answers is `campaign.responsiveness`; this module only narrows it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, and_, exists, func, literal, not_, or_, select

from engine.errors import CampaignError
from engine.letters.working_days import working_days_between
from engine.reports.campaign import responsiveness
from engine.store.models import (
    LETTER_STATES,
    OUTCOMES,
    STATE_MEANINGS,
    inbound_table,
    letter_table,
    member_table,
    wave_table,
)

PAGE_SIZE = 100
# The filter value for "no region / no employer on record"; a real value is never a lone dash.
NOT_KNOWN = "-"
# What a reply was taken to mean, as `responsiveness` counts it: the staff's outcome, else the
# engine's suggestion, else "not coded"; and letters that have no reply at all.
NOT_CODED, NO_REPLY = "not_coded", "no_reply"
# Each state in a few words, for a table cell; STATE_MEANINGS says it in full.
STATE_WORDS = {
    "drafted": "drafted, not yet invited",
    "invited": "invited, undecided",
    "confirmed": "confirmed",
    "queued": "waiting to be sent",
    "sent": "sent",
    "replied": "replied",
    "followed_up": "followed up",
    "opted_out": "member opted out",
    "self_sent": "sent by the member",
    "bounced": "bounced at the target",
    "unreachable": "member unreachable",
    "failed": "could not be sent",
    "overdue": "overdue: no reply",
    "pledged": "pledged",
    "declined": "declined",
}
OUTCOME_WORDS = {
    "supportive": "supportive",
    "non_committal": "non-committal",
    "refusal": "refusal",
    "holding": "holding reply",
    "acknowledgement": "acknowledgement only",
    NOT_CODED: "replied, not coded",
    NO_REPLY: "no reply",
}
TARGET_KINDS = {"employer": "Employer", "mp": "MP"}
TARGET_SORTS = ("silent", "slowest", "name", "letters")


@dataclass(frozen=True)
class LetterFilter:
    """What the letters are narrowed to; None: any."""

    state: str | None = None
    region: str | None = None
    employer: str | None = None
    outcome: str | None = None


FILTERS = tuple(f.name for f in fields(LetterFilter))


def find_wave(engine: Engine, wave_id: int) -> dict[str, Any] | None:
    """The launched wave with this id, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(wave_table.c.id, wave_table.c.name, wave_table.c.target).where(
                wave_table.c.id == wave_id, wave_table.c.status == "launched"
            )
        ).first()
    return dict(row._mapping) if row else None


def launched_waves(engine: Engine) -> list[dict[str, Any]]:
    """Every launched wave's id and name, oldest first."""
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(wave_table.c.id, wave_table.c.name)
                .where(wave_table.c.status == "launched")
                .order_by(wave_table.c.id)
            )
        ]


def _reply_outcome() -> Any:
    i = inbound_table.c
    return func.coalesce(i.outcome, i.suggested_outcome, literal(NOT_CODED))


def _has_reply(*conditions: Any) -> Any:
    i = inbound_table.c
    # One index entry per letter (ix_inbound_letter_id), not a scan of the inbox.
    return exists().where(i.letter_id == letter_table.c.id, i.kind == "reply", *conditions)


def letter_choices(engine: Engine, wave_id: int) -> dict[str, list[dict[str, Any]]]:
    """For each filter, the values the wave's letters have, each with its label and how many
    letters have it: states in the order letters move through them, the rest by label."""
    lt, m = letter_table.c, member_table.c
    mine = and_(lt.wave_id == wave_id, lt.kind == "letter")
    joined = letter_table.join(member_table, m.id == lt.member_id)
    with engine.connect() as conn:
        states = dict(conn.execute(select(lt.state, func.count()).where(mine).group_by(lt.state)).all())
        # Regions and employers in one pass over the members: a few thousand groups at most.
        spread = conn.execute(
            select(m.region, m.employer_key, func.max(m.employer_name), func.count())
            .select_from(joined)
            .where(mine)
            .group_by(m.region, m.employer_key)
        ).all()
        outcome = _reply_outcome()
        replies = conn.execute(
            select(outcome, func.count(func.distinct(inbound_table.c.letter_id)))
            .select_from(inbound_table.join(letter_table, lt.id == inbound_table.c.letter_id))
            .where(mine, inbound_table.c.kind == "reply")
            .group_by(outcome)
        ).all()
        answered = conn.execute(select(func.count()).where(mine, _has_reply())).scalar_one()
    total = sum(states.values())

    def choice(value: str | None, label: str | None, count: int) -> dict[str, Any]:
        if value is None or value == "":
            return {"value": NOT_KNOWN, "label": "(not known)", "count": int(count)}
        return {"value": value, "label": label or value, "count": int(count)}

    def merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # One choice per value: NULL and "" are both "not known", and an employer's members in
        # several regions came in several groups.
        by_value: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["value"] in by_value:
                by_value[row["value"]]["count"] += row["count"]
            else:
                by_value[row["value"]] = row
        return sorted(by_value.values(), key=lambda r: (r["value"] == NOT_KNOWN, r["label"].lower()))

    outcomes = {value: int(count) for value, count in replies}
    if total - answered:
        outcomes[NO_REPLY] = total - answered
    return {
        "state": [
            {"value": s, "label": STATE_WORDS.get(s, s), "count": int(states[s])}
            for s in LETTER_STATES
            if s in states
        ],
        "region": merged([choice(region, region, count) for region, _, _, count in spread]),
        "employer": merged([choice(key, name, count) for _, key, name, count in spread]),
        "outcome": [
            {"value": o, "label": OUTCOME_WORDS.get(o, o), "count": outcomes[o]}
            for o in (*OUTCOMES, NOT_CODED, NO_REPLY)
            if o in outcomes
        ],
    }


def printable(value: str) -> str:
    """A value from the address bar, short and on one line (CR, LF, NUL shown as escapes), for
    an error line."""
    return value[:60].encode("unicode_escape").decode("ascii")


def check_filter(choices: dict[str, list[dict[str, Any]]], given: dict[str, str]) -> LetterFilter:
    """The filter the form asked for ("" is any). A state or outcome the engine does not know, or
    a region or employer none of the wave's letters has, is refused with a CampaignError."""
    known: dict[str, set[str]] = {
        "state": set(LETTER_STATES),
        "outcome": {*OUTCOMES, NOT_CODED, NO_REPLY},
        "region": {c["value"] for c in choices["region"]},
        "employer": {c["value"] for c in choices["employer"]},
    }
    values: dict[str, str | None] = {}
    for name in FILTERS:
        value = (given.get(name) or "").strip()
        if value and value not in known[name]:
            raise CampaignError(f"{name}: '{printable(value)}' is not one of this wave's {name}s")
        values[name] = value or None
    return LetterFilter(**values)


def _where(wave_id: int, wanted: LetterFilter) -> list[Any]:
    lt, m = letter_table.c, member_table.c
    where: list[Any] = [lt.wave_id == wave_id, lt.kind == "letter"]
    if wanted.state:
        where.append(lt.state == wanted.state)
    for value, column in ((wanted.region, m.region), (wanted.employer, m.employer_key)):
        if value == NOT_KNOWN:
            where.append(or_(column.is_(None), column == ""))
        elif value:
            where.append(column == value)
    if wanted.outcome == NO_REPLY:
        where.append(not_(_has_reply()))
    elif wanted.outcome:
        where.append(_has_reply(_reply_outcome() == wanted.outcome))
    return where


def pages_of(total: int, page: int, per_page: int) -> tuple[int, int]:
    """(the page to show, how many pages): a page past the end shows the last one."""
    pages = max(1, -(-total // per_page))
    return min(max(page, 1), pages), pages


def list_letters(
    engine: Engine, wave_id: int, wanted: LetterFilter, page: int = 1, per_page: int = PAGE_SIZE
) -> dict[str, Any]:
    """One page of the wave's letters that match `wanted`, in the order they were made, with how
    many match in all and what each letter's replies were taken to mean."""
    lt, m = letter_table.c, member_table.c
    joined = letter_table.join(member_table, m.id == lt.member_id)
    where = _where(wave_id, wanted)
    # The member is read for the count only when the filter is about them.
    counted = joined if wanted.region or wanted.employer else letter_table
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(counted).where(*where)).scalar_one()
        page, pages = pages_of(total, page, per_page)
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    lt.id,
                    lt.reference,
                    lt.state,
                    lt.target_kind,
                    lt.target_key,
                    lt.target_name,
                    lt.sent_at,
                    lt.replied_at,
                    m.membership_no,
                    m.first_name,
                    m.last_name,
                    m.region,
                    m.employer_key,
                    m.employer_name,
                )
                .select_from(joined)
                .where(*where)
                .order_by(lt.id)
                .limit(per_page)
                .offset((page - 1) * per_page)
            )
        ]
        _add_outcomes(conn, rows)
    return {"total": total, "page": page, "pages": pages, "per_page": per_page, "rows": rows}


def _add_outcomes(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Each row's replies as (outcome, decided by staff), oldest first: one query for the page."""
    i = inbound_table.c
    for row in rows:
        row["outcomes"] = []
    by_id = {row["id"]: row for row in rows}
    if not by_id:
        return
    for letter_id, outcome, suggested in conn.execute(
        select(i.letter_id, i.outcome, i.suggested_outcome)
        .where(i.letter_id.in_(list(by_id)), i.kind == "reply")
        .order_by(i.received_at, i.id)
    ):
        by_id[letter_id]["outcomes"].append((outcome or suggested or NOT_CODED, outcome is not None))


# ---- one employer or MP ---------------------------------------------------------------


def _target_where(kind: str, key: str, wave_ids: list[int]) -> list[Any]:
    lt = letter_table.c
    # The wave list lets the (wave_id, target_key) index answer for a target across waves.
    return [lt.wave_id.in_(wave_ids), lt.kind == "letter", lt.target_kind == kind, lt.target_key == key]


def target_table(
    engine: Engine, wave: str | None = None, kind: str | None = None, sort: str = "silent"
) -> list[dict[str, Any]]:
    """How each employer and MP answers (campaign.responsiveness), only employers or only MPs
    with `kind`; letters to a fixed recipient and pledges have no target page and are left out."""
    if kind is not None and kind not in TARGET_KINDS:
        raise CampaignError(f"kind: {kind!r} is not one of {', '.join(TARGET_KINDS)}")
    kinds = [kind] if kind else list(TARGET_KINDS)
    return [row for row in responsiveness(engine, wave, sort) if row["kind"] in kinds]


def employers_written_to(engine: Engine, keys: list[str | None]) -> set[str]:
    """Which of these employers have had a letter of a launched wave (so have a page): one query."""
    wanted = sorted({key for key in keys if key})
    if not wanted:
        return set()
    lt = letter_table.c
    waves = [wave["id"] for wave in launched_waves(engine)]
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(lt.target_key)
                .where(lt.wave_id.in_(waves), lt.target_kind == "employer", lt.target_key.in_(wanted))
                .distinct()
            ).scalars()
        )


def target_summary(engine: Engine, kind: str, key: str) -> dict[str, Any] | None:
    """One employer's or MP's row of `responsiveness` over every launched wave; None when no
    letter was written to it."""
    if kind not in TARGET_KINDS:
        return None
    rows = responsiveness(engine, None, "name", target=(kind, key))
    return rows[0] if rows else None


def target_letters(
    engine: Engine, kind: str, key: str, page: int = 1, per_page: int = PAGE_SIZE
) -> dict[str, Any]:
    """One page of the letters written to this employer or MP, newest wave first, each with the
    working days its answer took (None while unanswered)."""
    lt, m, w = letter_table.c, member_table.c, wave_table.c
    wave_ids = [wave["id"] for wave in launched_waves(engine)]
    where = _target_where(kind, key, wave_ids)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).where(*where)).scalar_one()
        page, pages = pages_of(total, page, per_page)
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    lt.id,
                    lt.reference,
                    lt.state,
                    lt.sent_at,
                    lt.replied_at,
                    lt.wave_id,
                    w.name.label("wave"),
                    m.membership_no,
                    m.first_name,
                    m.last_name,
                )
                .select_from(
                    letter_table.join(member_table, m.id == lt.member_id).join(wave_table, w.id == lt.wave_id)
                )
                .where(*where)
                .order_by(lt.wave_id.desc(), lt.id)
                .limit(per_page)
                .offset((page - 1) * per_page)
            )
        ]
    for row in rows:
        sent, replied = row["sent_at"], row["replied_at"]
        row["working_days"] = (
            working_days_between(sent.date(), replied.date())
            if sent is not None and replied is not None
            else None
        )
    return {"total": total, "page": page, "pages": pages, "per_page": per_page, "rows": rows}


def target_replies(engine: Engine, kind: str, key: str, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """The replies matched to letters to this employer or MP (theirs, or forwarded by members),
    newest first, at most `limit`, with how many there are in all."""
    lt, i = letter_table.c, inbound_table.c
    wave_ids = [wave["id"] for wave in launched_waves(engine)]
    joined = inbound_table.join(letter_table, lt.id == i.letter_id)
    where = [*_target_where(kind, key, wave_ids), i.kind == "reply"]
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(joined).where(*where)).scalar_one()
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    i.id,
                    i.received_at,
                    i.subject,
                    i.outcome,
                    i.suggested_outcome,
                    i.forwarded,
                    lt.reference,
                )
                .select_from(joined)
                .where(*where)
                .order_by(i.received_at.desc(), i.id.desc())
                .limit(limit)
            )
        ]
    for row in rows:
        row["shown_outcome"] = row["outcome"] or row["suggested_outcome"] or NOT_CODED
    return {"total": total, "rows": rows}


def state_meanings(states: list[str]) -> list[tuple[str, str]]:
    """(short words, full meaning) for each of these states, for a key under a table."""
    return [(STATE_WORDS.get(s, s), STATE_MEANINGS.get(s, "")) for s in states]
