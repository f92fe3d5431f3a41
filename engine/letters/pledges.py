"""Pledge waves: a member's answer to the wave's question, and the counts by region and employer.

A pledge wave has no letter: each member's row in the letter table carries the
question as its subject and text, their personal link, and their answer as its
state (`pledged` or `declined`; drafted, invited or unreachable: no answer yet).
The answer can be changed while the link works.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, case, func, select

from engine.errors import CampaignError
from engine.letters.confirm import MemberLetter
from engine.letters.waves import get_wave
from engine.store.events import record_event
from engine.store.models import letter_table, member_table
from engine.store.states import mark_pledge_answer

ANSWERS = ("pledged", "declined", "no_answer")
# Members counted under these when the column is blank (members without a school have no employer).
NO_GROUP = {"region": "no region", "employer": "no employer"}


def is_pledge(found: MemberLetter) -> bool:
    return found.wave["target"] == "pledge"


def answer_pledge(engine: Engine, found: MemberLetter, pledged: bool) -> bool:
    """Record "I pledge" (or "Not for me") for a member, replacing any earlier answer.

    False when the answer was already this one (a double click, a replay): nothing changes.
    """
    if not is_pledge(found):
        raise CampaignError(
            f"wave {found.wave['name']!r} is not a pledge wave: its letters are sent, not pledged"
        )
    state = "pledged" if pledged else "declined"
    if found.letter["state"] == state:
        return False
    with engine.begin() as conn:
        done = mark_pledge_answer(conn, found.letter["id"], pledged)
        if done:
            record_event(
                conn,
                "pledge.answer",
                reference=found.letter["reference"],
                answer=state,
                was=found.letter["state"],
            )
    if done:
        found.letter["state"] = state
    return done


def _answer_counts(rows: Any) -> dict[str, int]:
    counts = dict.fromkeys(ANSWERS, 0)
    for answer, count in rows:
        counts[answer] += count
    return counts


def pledge_counts(engine: Engine, name: str, by: str | None = None) -> dict[str, Any]:
    """A pledge wave's answers: in all, and (with `by` region or employer) per group, largest first.

    Groups are the members' region or employer as they are now (blank: "no region", "no employer").
    """
    if by is not None and by not in NO_GROUP:
        raise CampaignError(f"--by: {by!r} is not one of {', '.join(NO_GROUP)}")
    lt, m = letter_table.c, member_table.c
    with engine.connect() as conn:
        wave = get_wave(conn, name)
        if wave["target"] != "pledge":
            raise CampaignError(f"wave {name!r} is not a pledge wave (its target is {wave['target']})")
        answer = case(
            (lt.state == "pledged", "pledged"), (lt.state == "declined", "declined"), else_="no_answer"
        ).label("answer")
        where = (lt.wave_id == wave["id"], lt.kind == "letter")
        total = _answer_counts(
            conn.execute(select(answer, func.count()).where(*where).group_by(answer)).all()
        )
        groups: list[dict[str, Any]] = []
        if by is not None:
            column = m.region if by == "region" else m.employer_name
            # Blank and missing count together, under one name.
            group = func.coalesce(func.nullif(func.trim(column), ""), NO_GROUP[by]).label("group")
            per_group: dict[str, list[tuple[str, int]]] = {}
            for name_, answer_, count in conn.execute(
                select(group, answer, func.count())
                .select_from(letter_table.join(member_table, m.id == lt.member_id))
                .where(*where)
                .group_by(group, answer)
            ):
                per_group.setdefault(name_, []).append((answer_, count))
            groups = [{by: key, **_answer_counts(rows)} for key, rows in per_group.items()]
            groups.sort(
                key=lambda g: (-g["pledged"], -(g["pledged"] + g["declined"] + g["no_answer"]), g[by])
            )
    return {"wave": name, "question": wave["question"], "by": by, **total, "groups": groups}
