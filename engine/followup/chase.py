"""Timed follow-up work, safe to run from cron as often as you like.

- A letter not replied to within its wave's reply window, counted in working
  days (weekends and the bank holidays of the member's nation skipped), becomes
  `overdue`, and where the wave has a chaser template its member is offered a
  chaser to confirm. A holding reply (or an acknowledgement) is no answer: the
  window starts again from the day it was written.
- A letter for a meeting (a wave with --meeting-date, e.g. a JCNC agenda
  letter) is chased sooner when the meeting is near: `chase_before` working
  days before it. From the meeting day on, nothing is chased any more.
- A letter to an MP: MPs answer the constituent, not us, so `ask_days` after it
  went the member is asked "Has your MP replied?", and reminded once a week later
  if they have not answered.

Every step is guarded by the state it moves from, so running it twice does nothing more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, or_, select

from engine.errors import CampaignError
from engine.followup.drafts import NOT_YET_ANSWERED, draft_letter, load_wave, queue_email
from engine.letters.render import WaveRenderer
from engine.letters.working_days import working_days_after, working_days_before
from engine.settings import Settings
from engine.store.models import (
    MP_ANSWERS,
    inbound_table,
    letter_table,
    member_table,
    postcode_table,
    utcnow,
    wave_table,
)

REMIND_AFTER = timedelta(days=7)
_PAGE = 1000


def chase_due(
    went: date, held_since: date | None, wave: dict[str, Any], country: str | None
) -> tuple[date, bool]:
    """(the day an unanswered letter becomes overdue, whether it is then chased).

    It is overdue `reply_days` working days after it went (or after the latest holding reply).
    A wave with a meeting chases it sooner, `chase_before` working days before the meeting, though
    never on the day it went; from the meeting day on, a chaser is no use and none is drafted.
    """
    start = max(went, held_since or went)
    due = working_days_after(start, wave["reply_days"], country)
    meeting = wave.get("meeting_date")
    if meeting is None:
        return due, True
    before = max(
        working_days_before(meeting, wave["chase_before"], country), working_days_after(went, 1, country)
    )
    due = min(due, before)
    return due, due < meeting


@dataclass
class ChaseResult:
    overdue: int = 0
    chasers: int = 0
    questionnaires: int = 0
    reminders: int = 0
    by_wave: dict[str, Counter] = field(default_factory=dict)

    def count(self, wave: str, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        self.by_wave.setdefault(wave, Counter())[what] += 1

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["by_wave"] = {name: dict(counts) for name, counts in self.by_wave.items()}
        return data


def _waves(conn: Connection, name: str | None) -> list[dict[str, Any]]:
    stmt = select(wave_table).where(wave_table.c.status == "launched").order_by(wave_table.c.id)
    if name is not None:
        stmt = select(wave_table).where(wave_table.c.name == name)
    waves = [dict(r._mapping) for r in conn.execute(stmt)]
    if name is not None and not waves:
        raise CampaignError(f"no wave named {name!r} (see: campaign wave list)")
    if name is not None and waves[0]["status"] != "launched":
        raise CampaignError(f"wave {name!r} has not been launched yet")
    return waves


def chase(
    engine: Engine,
    settings: Settings,
    wave_name: str | None = None,
    *,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> ChaseResult:
    now = now or utcnow()
    today = now.date()
    result = ChaseResult()
    with engine.connect() as conn:
        waves = _waves(conn, wave_name)
    for wave in waves:
        _overdue(engine, settings, wave, now, today, result, progress)
        if wave["target"] == "mp":
            _questionnaires(engine, settings, wave, now, result)
    return result


def _letters_page(
    conn: Connection, wave_id: int, states: tuple[str, ...], after: int
) -> list[dict[str, Any]]:
    lt, m, p = letter_table.c, member_table.c, postcode_table.c
    return [
        dict(r._mapping)
        for r in conn.execute(
            select(letter_table, p.country.label("member_country"))
            .join(member_table, m.id == lt.member_id)
            .outerjoin(postcode_table, p.postcode == m.postcode)
            .where(lt.wave_id == wave_id, lt.kind == "letter", lt.state.in_(states), lt.id > after)
            .order_by(lt.id)
            .limit(_PAGE)
        )
    ]


def restart_reply_clock(conn: Connection, letter: dict[str, Any], now: datetime) -> bool:
    """overdue → sent (or self_sent): a holding reply to a letter, or to its chaser, means its target
    has not answered yet; the reply window starts again from that reply (see `_held_since`)."""
    lt = letter_table.c
    letter_id = (
        letter["parent_id"] if letter.get("kind") == "chaser" and letter.get("parent_id") else letter["id"]
    )
    moved = conn.execute(
        letter_table.update()
        .where(lt.id == letter_id, lt.state == "overdue")
        .values(
            state=case((lt.sent_at.is_not(None), "sent"), else_="self_sent"), overdue_at=None, updated_at=now
        )
    ).rowcount
    return bool(moved)


def _held_since(conn: Connection, letter_ids: list[int]) -> dict[int, date]:
    """For each letter its target has held with a holding reply or an acknowledgement (to the letter
    or to its chaser), the day the latest such reply was written."""
    i, lt = inbound_table.c, letter_table.c
    outcome = func.coalesce(i.outcome, i.suggested_outcome)
    original = func.coalesce(lt.parent_id, lt.id)
    rows = conn.execute(
        select(original, func.max(func.coalesce(i.authored_at, i.received_at)))
        .join(letter_table, lt.id == i.letter_id)
        .where(
            i.kind == "reply",
            outcome.in_(NOT_YET_ANSWERED),
            or_(lt.id.in_(letter_ids), lt.parent_id.in_(letter_ids)),
        )
        .group_by(original)
    ).all()
    return {
        letter_id: (when.date() if isinstance(when, datetime) else date.fromisoformat(str(when)[:10]))
        for letter_id, when in rows
    }


def _overdue(
    engine: Engine,
    settings: Settings,
    wave: dict[str, Any],
    now: datetime,
    today: date,
    result: ChaseResult,
    progress: Callable[[int], None] | None,
) -> None:
    lt = letter_table.c
    after = 0
    loaded: dict[str, Any] | None = None
    renderer: WaveRenderer | None = None
    while True:
        with engine.begin() as conn:
            page = _letters_page(conn, wave["id"], ("sent", "self_sent"), after)
            if not page:
                return
            held = _held_since(conn, [letter["id"] for letter in page])
            for letter in page:
                after = letter["id"]
                went = letter["sent_at"] or letter["decided_at"]
                if went is None:
                    continue
                due, chased = chase_due(went.date(), held.get(letter["id"]), wave, letter["member_country"])
                if today < due:
                    continue
                # Past the meeting, it is overdue all the same, but a chaser would come too late.
                chased = chased and not (wave["meeting_date"] and today >= wave["meeting_date"])
                moved = conn.execute(
                    letter_table.update()
                    .where(lt.id == letter["id"], lt.state.in_(("sent", "self_sent")))
                    .values(state="overdue", overdue_at=now, updated_at=now)
                ).rowcount
                if not moved:
                    continue
                result.count(wave["name"], "overdue")
                if chased and wave["chaser_template"] and letter["target_kind"] != "mp":
                    if loaded is None:
                        loaded = load_wave(conn, wave["id"], settings)
                        renderer = WaveRenderer(loaded["frozen"])
                    letter.pop("member_country")
                    if (
                        draft_letter(conn, loaded, letter, "chaser", settings, now, renderer=renderer)
                        is not None
                    ):
                        result.count(wave["name"], "chasers")
            if progress is not None:
                progress(len(page))


def _questionnaires(
    engine: Engine, settings: Settings, wave: dict[str, Any], now: datetime, result: ChaseResult
) -> None:
    """Ask, then remind once, the members whose letters to an MP went `ask_days` ago."""
    lt = letter_table.c
    asked_before = now - timedelta(days=wave["ask_days"])
    with engine.begin() as conn:
        loaded = load_wave(conn, wave["id"], settings)
    renderer = WaveRenderer(loaded["frozen"])
    after = 0
    while True:
        # A page at a time, each in its own transaction: a wave can hold 450,000 letters.
        with engine.begin() as conn:
            page = [
                dict(r._mapping)
                for r in conn.execute(
                    select(letter_table)
                    .where(
                        lt.wave_id == wave["id"],
                        lt.kind == "letter",
                        lt.state.in_(("sent", "self_sent", "overdue")),
                        lt.mp_answer.is_(None),
                        or_(lt.asked_at.is_(None), lt.reminded_at.is_(None)),
                        lt.id > after,
                    )
                    .order_by(lt.id)
                    .limit(_PAGE)
                )
            ]
            if not page:
                return
            for letter in page:
                after = letter["id"]
                went = letter["sent_at"] or letter["decided_at"]
                if letter["asked_at"] is None:
                    if went is None or went > asked_before:
                        continue
                    kind, what, stamp = "questionnaire", "questionnaires", "asked_at"
                elif letter["asked_at"] <= now - REMIND_AFTER:
                    kind, what, stamp = "questionnaire_reminder", "reminders", "reminded_at"
                else:
                    continue
                if queue_email(conn, letter, loaded, kind, settings, now, renderer=renderer):
                    result.count(wave["name"], what)
                conn.execute(
                    letter_table.update().where(lt.id == letter["id"]).values({stamp: now, "updated_at": now})
                )


def record_answer(conn: Connection, letter_id: int, answer: str) -> None:
    """The member's answer to "Has your MP replied?"; a later answer replaces an earlier one."""
    if answer not in MP_ANSWERS:
        raise CampaignError(f"answer {answer!r}: use one of {', '.join(MP_ANSWERS)}")
    now = utcnow()
    conn.execute(
        letter_table.update()
        .where(letter_table.c.id == letter_id)
        .values(mp_answer=answer, mp_answered_at=now, updated_at=now)
    )
