"""Escalation waves: members chosen by what became of their letter in an earlier wave.

`--after WAVE --outcome refused,silent` writes for exactly the members whose
letter (of kind `letter`) in WAVE was refused or went unanswered. Each
member's earlier letter is judged in the same query that reads the members for
a launch, so 450,000 members cost one query, not one each.

How a letter is judged, in this order:
  not_sent   it never went: not decided yet, opted out, still queued, or the
             member's invitation bounced;
  bounced    it did not reach the target: it bounced, or could not be sent;
  refused / supportive / non_committal
             the outcome of the target's latest reply coded as one of these
             (by staff, else the engine's suggestion): the latest coded answer wins;
  replied    also said of the three above: the target answered, coded or not
             (any reply to the letter or its chaser but a holding reply or an
             acknowledgement, and not the member's own message), or, for a
             letter to an MP, the member said their MP replied;
  silent     it went (sent by us or by the member) and no answer came within the
             wave's reply window, counted in working days from when it went or
             from the latest holding reply or acknowledgement (these are not
             answers): overdue, or past the window before `chase` has run;
  waiting    it went, no answer yet, and the window has not passed.
  holding    also said of silent or waiting letters whose target sent a holding
             reply or an acknowledgement.
  any        every member with a letter in WAVE.
A member with no letter in WAVE matches none of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, literal, or_, select
from sqlalchemy.sql import ColumnElement, FromClause

from engine.errors import CampaignError
from engine.letters.targeting import AFTER_KEY, where_label
from engine.letters.working_days import SUBDIVISIONS, latest_start_due_by
from engine.store.models import inbound_table, letter_table, member_table, postcode_table, wave_table

# The words an organiser gives to --outcome, with what each selects (README says the same).
OUTCOME_WORDS = {
    "refused": "the target's latest answer was a refusal",
    "silent": "the letter went and no answer came within the reply window",
    "holding": "the target sent only a holding reply or an acknowledgement",
    "waiting": "the letter went and its reply window has not passed",
    "supportive": "the target's latest answer was supportive",
    "non_committal": "the target's latest answer was non-committal",
    "replied": "the target answered (any reply but a holding reply or acknowledgement)",
    "bounced": "the letter did not reach the target (bounced or could not be sent)",
    "not_sent": "the letter never went (not decided, opted out, or the member unreachable)",
    "any": "the member had a letter in the wave",
}
_ALIASES = {
    "refusal": "refused",
    "refuse": "refused",
    "noncommittal": "non_committal",
    "unanswered": "silent",
    "no_reply": "silent",
    "answered": "replied",
    "not_replied": "silent",
    "all": "any",
}
# Reply outcomes that answer the letter, and how --outcome names them.
_ANSWERS = {"refusal": "refused", "supportive": "supportive", "non_committal": "non_committal"}
# Replies that only hold the letter (inbox and follow-up say the same: they restart the window).
_NOT_ANSWERS = ("holding", "acknowledgement")
_NOT_SENT_STATES = ("drafted", "invited", "confirmed", "queued", "opted_out", "unreachable")
_UNDELIVERED_STATES = ("bounced", "failed")
_ANSWERED_STATES = ("replied", "followed_up")


def parse_outcomes(text: str) -> list[str]:
    """'refused,silent' → ['refused', 'silent'] (in the order of OUTCOME_WORDS); unknown words refused."""
    chosen: set[str] = set()
    for part in text.split(","):
        word = "_".join(part.strip().lower().replace("-", " ").split())
        if not word:
            continue
        word = _ALIASES.get(word, word)
        if word not in OUTCOME_WORDS:
            raise CampaignError(
                f"--outcome: {part.strip()!r} is not an outcome: use {', '.join(OUTCOME_WORDS)} "
                "(several separated by commas)"
            )
        chosen.add(word)
    if not chosen:
        raise CampaignError(f"--outcome: name at least one of {', '.join(OUTCOME_WORDS)}")
    return [word for word in OUTCOME_WORDS if word in chosen]


def parse_after(conn: Connection, this_wave: str, after: str, outcomes: str | None) -> dict[str, Any] | None:
    """The rule as stored in the wave's filters; None for `--after ''` (no rule)."""
    if not after.strip():
        if outcomes:
            raise CampaignError(
                "--outcome: name the earlier wave too, e.g. --after 'Employers' --outcome refused,silent"
            )
        return None
    if outcomes is None:
        raise CampaignError(
            f"--after: say which outcomes of {after!r} to write after, e.g. --outcome refused,silent"
        )
    words = parse_outcomes(outcomes)
    if after == this_wave:
        raise CampaignError(f"--after: {after!r} is this wave: name an earlier one")
    row = conn.execute(select(wave_table.c.id).where(wave_table.c.name == after)).first()
    if row is None:
        raise CampaignError(f"--after: no wave named {after!r} (see `campaign wave list`)")
    return {"wave": after, "wave_id": row.id, "outcomes": words}


def after_rule(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """A wave's --after rule, or None."""
    return (filters or {}).get(AFTER_KEY)


def after_label(rule: dict[str, Any]) -> str:
    return f"their letter in {rule['wave']!r} was " + " or ".join(
        w.replace("_", "-") for w in rule["outcomes"]
    )


def members_label(filters: dict[str, Any] | None) -> str:
    """Who a wave writes for, in words: its --where and its --after rule."""
    where = where_label(filters or {})
    rule = after_rule(filters)
    if rule is None:
        return where or "all members"
    return (where + " and " if where else "") + after_label(rule)


def load_after(conn: Connection, wave: dict[str, Any], *, launching: bool = False) -> None:
    """Give the wave's --after rule the earlier wave's reply window, read now (a draft's may change).

    With `launching`, refuse when the earlier wave is not launched: nobody has a letter in it yet.
    """
    rule = after_rule(wave.get("filters"))
    if rule is None:
        return
    earlier = conn.execute(
        select(wave_table.c.status, wave_table.c.reply_days).where(wave_table.c.id == rule["wave_id"])
    ).first()
    if launching and (earlier is None or earlier.status != "launched"):
        raise CampaignError(
            f"--after: wave {rule['wave']!r} has not been launched, so no member has a letter in it yet: "
            "launch it first"
        )
    wave["filters"] = {
        **wave["filters"],
        AFTER_KEY: {**rule, "reply_days": earlier.reply_days if earlier else 10},
    }


def judge_earlier_letters(
    members: FromClause, rule: dict[str, Any], now: datetime
) -> tuple[FromClause, list[ColumnElement[Any]]]:
    """`members` (a FROM holding the member table) joined to each member's letter in the rule's wave,
    and two columns judging it: `after_word` (see the module's docstring; NULL without a letter) and
    `after_held` (1 when a holding reply or acknowledgement came and no answer).

    Everything is found through indexes from the member's row (their letter and chaser by wave,
    member and kind; replies by letter), so a page of members costs a page of lookups: a join on
    grouped replies instead was scanned once per member by SQLite.
    """
    m, i, pc = member_table.c, inbound_table.c, postcode_table.c
    earlier, chaser = letter_table.alias("earlier"), letter_table.alias("earlier_chaser")
    e = earlier.c
    outcome = func.coalesce(i.outcome, i.suggested_outcome)
    written = func.coalesce(i.authored_at, i.received_at)

    def replies(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
        """Replies to the letter or to its chaser (the same ask again), but not the member's own message."""
        return and_(
            i.letter_id.in_([e.id, chaser.c.id]),
            # Written so that no index serves it: SQLite would otherwise read every reply by kind
            # instead of this letter's by letter_id.
            i.kind.concat("") == "reply",
            or_(
                i.forwarded,
                i.source == "paper",
                i.match_method == "staff",
                func.lower(func.coalesce(i.author_addr, "")) != func.lower(m.email),
            ),
            *conditions,
        )

    answered = select(i.id).where(replies(or_(outcome.is_(None), outcome.not_in(_NOT_ANSWERS)))).exists()
    held_at = select(func.max(written)).where(replies(outcome.in_(_NOT_ANSWERS))).scalar_subquery()
    latest = (
        select(outcome)
        .where(replies(outcome.in_(tuple(_ANSWERS))))
        .order_by(written.desc(), i.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    window_ends = _window_ends(rule, now, pc.country)
    went = func.coalesce(e.sent_at, e.decided_at)
    past_window = and_(
        went.is_not(None),
        went < window_ends,
        or_(held_at.is_(None), held_at < window_ends),
    )
    word = case(
        (e.id.is_(None), None),
        (e.state.in_(_NOT_SENT_STATES), "not_sent"),
        (e.state.in_(_UNDELIVERED_STATES), "bounced"),
        # The latest answer's outcome as the reply was coded (`refusal` is read as `refused`).
        # An MP answers the constituent, not us: the member telling us "yes, my MP replied" is the answer.
        (
            or_(e.state.in_(_ANSWERED_STATES), answered, e.mp_answer == "yes"),
            func.coalesce(latest, "replied"),
        ),
        (or_(e.state == "overdue", past_window), "silent"),
        else_="waiting",
    )
    held = case((and_(e.id.is_not(None), ~answered, held_at.is_not(None)), 1), else_=0)
    joined = (
        members.outerjoin(
            earlier,
            and_(e.member_id == m.id, e.wave_id == rule["wave_id"], e.kind == "letter"),
        )
        .outerjoin(
            chaser,
            and_(chaser.c.member_id == m.id, chaser.c.wave_id == rule["wave_id"], chaser.c.kind == "chaser"),
        )
        .outerjoin(postcode_table, pc.postcode == m.postcode)
    )
    return joined, [word.label("after_word"), held.label("after_held")]


def _window_ends(rule: dict[str, Any], now: datetime, country: ColumnElement[Any]) -> ColumnElement[Any]:
    """The moment before which a letter must have gone (or been held) to be past its reply window
    today, by the member's nation (its bank holidays), as `chase` counts it."""
    days = rule["reply_days"]
    today = now.astimezone(UTC).date()
    ends = {
        name: literal(
            datetime.combine(latest_start_due_by(today, days, name) + timedelta(days=1), time(), UTC),
            letter_table.c.sent_at.type,
        )
        for name in SUBDIVISIONS
    }
    return case(
        *((country == name, value) for name, value in ends.items() if name != "England"),
        else_=ends["England"],
    )


def _word(row: Any) -> str | None:
    word = row["after_word"]
    return _ANSWERS.get(word, word)


def judged(row: Any) -> str:
    """What became of a member's earlier letter, as `wave status` counts it: an outcome word
    (`silent` or `waiting` with a holding reply counted as `holding`), or `no_letter`."""
    word = _word(row)
    if word is None:
        return "no_letter"
    if row["after_held"] and word in ("silent", "waiting"):
        return "holding"
    return word


def outside_after(row: Any, rule: dict[str, Any] | None) -> str | None:
    """Why a member's earlier letter does not match the rule (the detail shown), or None when it does."""
    if rule is None:
        return None
    word = _word(row)
    if word is None:
        return f"no letter in {rule['wave']!r}"
    words = {word, "any"}
    if word in _ANSWERS.values():
        words.add("replied")
    held = judged(row) == "holding"
    if held:
        words.add("holding")
    if words & set(rule["outcomes"]):
        return None
    shown = word.replace("_", "-") + (" (holding reply)" if held else "")
    wanted = " or ".join(w.replace("_", "-") for w in rule["outcomes"])
    return f"letter in {rule['wave']!r} {shown}, not {wanted}"
