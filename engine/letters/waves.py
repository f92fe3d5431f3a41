"""Waves: creating, editing and listing them, and counting their letters by state.

A wave stays a draft, editable, until `launch.launch_wave` freezes its
templates and makes its letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from email.utils import parseaddr
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from engine.errors import CampaignError
from engine.letters.attachments import attachment_list, planned_attachments, store_attachments
from engine.letters.escalation import after_rule, parse_after
from engine.letters.render import email_template_paths, freeze_templates, letter_template_path
from engine.letters.similarity import similar_letters
from engine.letters.targeting import (
    AFTER_KEY,
    known_columns,
    parse_nations,
    parse_where,
    template_nations,
    where_filters,
)
from engine.letters.templating import read_template
from engine.members.emails import EmailNotValidError, normalise_email
from engine.members.validation import header_problems
from engine.settings import Settings
from engine.store.events import record_event
from engine.store.models import (
    DONE_STATES,
    STATE_MEANINGS,
    WAVE_TARGETS,
    inbound_table,
    letter_table,
    outbox_table,
    utcnow,
    wave_table,
)

# Letters that did not reach their target: failed or bounced on the way to the MP or employer, or
# unreachable because the member's own invitation bounced (the letter never went).
UNDELIVERED = ("failed", "bounced", "unreachable")


# An employer who replies gets the follow-up; one who does not, the chaser. Other waves name their own.
DEFAULT_LATER = {
    "employer": {"follow_up_template": "employer-follow-up", "chaser_template": "employer-chaser"}
}


@dataclass
class WaveSpec:
    """What an organiser gives `wave create` / `wave edit`; None leaves a value as it is."""

    target: str | None = None
    letter: str | None = None
    invite: str | None = None
    subject: str | None = None
    reply_days: int | None = None
    link_days: int | None = None
    where: list[str] | None = None
    after: str | None = None  # an earlier wave's name; "" for no --after rule
    outcomes: str | None = None  # --outcome: "refused,silent"
    nations: str | None = None  # "england,wales", "all"; None: as it is (at create: the template's)
    to: str | None = None
    to_address: str | None = None
    to_salutation: str | None = None
    follow_up: str | None = None  # "" for none
    chaser: str | None = None  # "" for none
    ask_days: int | None = None
    asks: str | None = None  # "" for none
    attach: list[str] | None = None  # files to attach (a name attached already is replaced)
    detach: list[str] | None = None  # attachment names to remove
    one_per_target: bool | None = None
    meeting_date: str | None = None  # YYYY-MM-DD; "" for none
    chase_before: int | None = None
    daily_cap: int | None = None  # letters per target address per day; 0: no cap
    question: str | None = None  # a pledge wave's "I will …"
    done_label: str | None = None  # "" for none


# A pledge's question reads on a phone in one glance; a label fits a line of `wave status`.
MAX_QUESTION = 300
MAX_DONE_LABEL = 40


def _one_line(option: str, text: str, longest: int, what: str) -> str:
    """A short plain-words option as stored: one line, no template fields."""
    problems = header_problems({option: text})
    if problems:
        raise CampaignError(f"{option}: {problems[0][1]}: give {what}")
    text = " ".join(text.split())
    if len(text) > longest:
        raise CampaignError(f"{option}: {len(text)} characters: give {what} (at most {longest})")
    if "{{" in text or "{%" in text:
        raise CampaignError(f"{option}: plain words only, no template fields: it is shown as written")
    return text


# Letters per target per day: more than any inbox is read by hand; 0 is no cap.
MAX_DAILY_CAP = 100_000

# An invitation says what the letter asks in one sentence a member reads at a glance.
MAX_ASKS = 300


def _asks(text: str) -> str | None:
    """--asks as stored: one line of plain words (None when blank: the invitation's own words)."""
    problems = header_problems({"--asks": text})
    if problems:
        raise CampaignError(f"--asks: {problems[0][1]}: give one plain sentence")
    text = " ".join(text.split())
    if len(text) > MAX_ASKS:
        raise CampaignError(
            f"--asks: {len(text)} characters: say what the letter asks in one short sentence "
            f"(at most {MAX_ASKS})"
        )
    if "{{" in text or "{%" in text:
        raise CampaignError("--asks: plain words only, no template fields: it is shown as written")
    return text or None


def _check_header_bound(spec: WaveSpec) -> None:
    """Refuse an option whose text reaches letters' headers (subject, recipient) if no header can hold it."""
    options = {
        "--subject": spec.subject,
        "--to": spec.to,
        "--to-address": spec.to_address,
        "--to-salutation": spec.to_salutation,
        "--where": "".join(spec.where or ()),
    }
    problems = header_problems(options, multiline=("--to-address",))
    if problems:
        option, problem = problems[0]
        raise CampaignError(f"{option}: {problem}")


def _meeting_date(text: str, today: date) -> date | None:
    """--meeting-date as stored: a date not in the past (None when blank)."""
    if not text.strip():
        return None
    try:
        meeting = date.fromisoformat(text.strip())
    except ValueError:
        raise CampaignError(f"--meeting-date: {text!r} is not a date: give it as YYYY-MM-DD") from None
    if meeting < today:
        raise CampaignError(
            f"--meeting-date: {meeting:%Y-%m-%d} is in the past: give the date of the coming meeting"
        )
    return meeting


# Enough for a meeting a term away; a chase further ahead than that would come before the letter.
MAX_CHASE_BEFORE = 60


def _wave_values(
    wave_name: str, spec: WaveSpec, current: dict[str, Any] | None, engine: Engine, settings: Settings
) -> dict[str, Any]:
    _check_header_bound(spec)
    values: dict[str, Any] = {}
    if spec.target is not None:
        if spec.target not in WAVE_TARGETS:
            raise CampaignError(f"--target: {spec.target!r} is not one of {', '.join(WAVE_TARGETS)}")
        values["target"] = spec.target
    for name in ("letter", "invite"):
        value = getattr(spec, name)
        if value is not None:
            values[f"{name}_template"] = value
    for name in ("follow_up", "chaser"):
        value = getattr(spec, name)
        if value is not None:
            values[f"{name}_template"] = value or None
    if spec.ask_days is not None:
        if not 1 <= spec.ask_days <= 365:
            raise CampaignError("--ask-after: must be between 1 and 365 days")
        values["ask_days"] = spec.ask_days
    if spec.subject is not None:
        values["subject"] = spec.subject or None
    if spec.asks is not None:
        values["asks"] = _asks(spec.asks)
    if spec.question is not None:
        values["question"] = (
            _one_line("--question", spec.question, MAX_QUESTION, "one sentence, e.g. 'I will …'") or None
        )
    if spec.done_label is not None:
        values["done_label"] = (
            _one_line("--done-label", spec.done_label, MAX_DONE_LABEL, "a few words, e.g. 'stepped down'")
            or None
        )
    for name in ("reply_days", "link_days"):
        value = getattr(spec, name)
        if value is not None:
            if not 1 <= value <= 365:
                raise CampaignError(f"--{name.replace('_', '-')}: must be between 1 and 365")
            values[name] = value
    if spec.one_per_target is not None:
        values["one_per_target"] = spec.one_per_target
    if spec.meeting_date is not None:
        values["meeting_date"] = _meeting_date(spec.meeting_date, utcnow().date())
    if spec.chase_before is not None:
        if not 1 <= spec.chase_before <= MAX_CHASE_BEFORE:
            raise CampaignError(f"--chase-before: must be between 1 and {MAX_CHASE_BEFORE} working days")
        values["chase_before"] = spec.chase_before
    if spec.daily_cap is not None:
        if not 0 <= spec.daily_cap <= MAX_DAILY_CAP:
            raise CampaignError(f"--daily-cap: must be between 0 (no cap) and {MAX_DAILY_CAP:,}")
        values["daily_cap"] = spec.daily_cap
    if spec.where is not None or spec.after is not None or spec.outcomes is not None:
        # --where and --after live together in the filters: each replaces only its own part.
        filters = (current or {}).get("filters") or {}
        with engine.connect() as conn:
            where = where_filters(filters)
            if spec.where is not None:
                where = parse_where(spec.where, known_columns(conn))
            rule = after_rule(filters)
            if spec.after is not None or spec.outcomes is not None:
                rule = parse_after(conn, wave_name, spec.after or "", spec.outcomes)
        values["filters"] = {**where, **({AFTER_KEY: rule} if rule else {})}
    target = values.get("target") or (current or {}).get("target")
    if target == "pledge":
        if spec.letter:
            raise CampaignError("--letter: a pledge wave has no letter: give its --question instead")
        if spec.attach:
            raise CampaignError("--attach: a pledge wave has no letter to attach files to")
        values["letter_template"] = ""
        for later in ("follow_up_template", "chaser_template"):
            values[later] = None
    elif not (spec.letter or (current or {}).get("letter_template")):
        # A pledge wave turned into one with a letter: it has none yet.
        raise CampaignError(f"--letter: required for a wave to {target}")
    if spec.nations is not None:
        values["nations"] = parse_nations(spec.nations)
    elif target == "pledge" and (current is None or spec.invite is not None):
        # No letter: the invitation's text part says which nations a pledge reaches.
        invite = values.get("invite_template") or current["invite_template"]  # type: ignore[index]
        path = email_template_paths(invite, settings)[0]
        values["nations"] = template_nations(read_template(path), path.name)
    elif current is None or spec.letter is not None:
        # No --nations: the letter template says which nations its waves reach (all, if it is silent).
        letter = spec.letter or current["letter_template"]  # type: ignore[index]
        path = letter_template_path(letter, settings)
        values["nations"] = template_nations(read_template(path), path.name)
    if spec.to is not None:
        name, address = parseaddr(spec.to)
        if not name:
            raise CampaignError(
                f"--to: {spec.to!r} needs a name, e.g. 'Secretary of State <office@example.org>'"
            )
        values["fixed_name"] = name
        if address:
            try:
                values["fixed_email"] = normalise_email(address)
            except EmailNotValidError as exc:
                raise CampaignError(f"--to: {address!r} is not an address ({exc})") from None
        else:
            values["fixed_email"] = None
    if spec.to_address is not None:
        lines = [p.strip() for p in re.split(r"[|;\n]", spec.to_address) if p.strip()]
        values["fixed_address"] = "\n".join(lines) or None
    if spec.to_salutation is not None:
        values["fixed_salutation"] = spec.to_salutation or None
    merged = {**(current or {}), **values}
    if merged.get("target") == "pledge" and not merged.get("question"):
        raise CampaignError("--question: a pledge wave needs its question, e.g. --question 'I will …'")
    if merged.get("target") != "pledge" and merged.get("question"):
        raise CampaignError("--question: only a pledge wave (--target pledge) asks a question")
    if merged.get("target") == "fixed" and not merged.get("fixed_name"):
        raise CampaignError(
            "--to: a fixed wave needs its one recipient, e.g. --to 'Secretary of State <office@example.org>'"
        )
    return values


def create_wave(engine: Engine, name: str, spec: WaveSpec, settings: Settings) -> dict[str, Any]:
    """Create a draft wave after checking that its templates compile and use known fields."""
    if not name.strip() or len(name) > 80:
        raise CampaignError("wave name: give a name of 1 to 80 characters")
    problems = header_problems({"wave name": name})
    if problems:
        raise CampaignError(f"wave name: {problems[0][1]}")
    for required in ("target", "letter", "invite"):
        if required == "letter" and spec.target == "pledge":
            continue
        if getattr(spec, required) is None:
            raise CampaignError(f"--{required}: required to create a wave")
    values = _wave_values(name, spec, None, engine, settings)
    now = utcnow()
    row = {
        "name": name,
        "created_at": now,
        "updated_at": now,
        "status": "draft",
        "frozen": {},
        "reply_days": 10,
        "link_days": 30,
        "ask_days": 14,
        "filters": {},
        "nations": None,
        "one_per_target": False,
        "meeting_date": None,
        "chase_before": 5,
        "daily_cap": settings.daily_cap,
        **DEFAULT_LATER.get(values["target"], {}),
        **values,
    }
    freeze_templates(row, settings)  # fails early, with file:line, on a bad template
    if spec.detach:
        raise CampaignError("--detach: a new wave has no attachments yet")
    attachments = planned_attachments(None, None, spec.attach, None, settings)
    with engine.begin() as conn:
        if conn.execute(select(wave_table.c.id).where(wave_table.c.name == name)).first():
            raise CampaignError(f"wave {name!r} already exists: use `campaign wave edit`")
        wave_id = conn.execute(wave_table.insert().values(**row)).inserted_primary_key[0]
        changes = store_attachments(conn, wave_id, attachments)
        record_event(conn, "wave.create", wave=name, **changes)
    return get_wave(engine, name)


def edit_wave(engine: Engine, name: str, spec: WaveSpec, settings: Settings) -> dict[str, Any]:
    current = get_wave(engine, name)
    if current["status"] != "draft" and _only_daily_cap(spec):
        # The cap governs sending, not what was launched: an organiser may tighten or loosen it
        # while the wave's letters go (an MP's office asks for fewer a day).
        values = _wave_values(name, spec, current, engine, settings)
        with engine.begin() as conn:
            conn.execute(wave_table.update().where(wave_table.c.id == current["id"]).values(**values))
            record_event(conn, "wave.edit", wave=name, changed=sorted(values))
        return get_wave(engine, name)
    if current["status"] != "draft":
        raise CampaignError(
            f"wave {name!r} was launched on {current['launched_at']:%d %B %Y}: it can no longer be edited "
            "(except --daily-cap)"
        )
    values = _wave_values(name, spec, current, engine, settings)
    freeze_templates({**current, **values}, settings)
    with engine.begin() as conn:
        attachments = planned_attachments(conn, current["id"], spec.attach, spec.detach, settings)
        changes = store_attachments(conn, current["id"], attachments)
        changed = sorted(values) + (["attachments"] if attachments else [])
        conn.execute(
            wave_table.update().where(wave_table.c.id == current["id"]).values(**values, updated_at=utcnow())
        )
        record_event(conn, "wave.edit", wave=name, changed=changed, **changes)
    return get_wave(engine, name)


def _only_daily_cap(spec: WaveSpec) -> bool:
    given = {name for name, value in vars(spec).items() if value is not None}
    return given == {"daily_cap"}


def effective_daily_cap(wave: dict[str, Any], settings: Settings) -> int:
    """The wave's cap of letters per target per day (0: none); older waves follow the setting."""
    cap = wave.get("daily_cap")
    return settings.daily_cap if cap is None else cap


def get_wave(engine_or_conn: Engine | Connection, name: str) -> dict[str, Any]:
    stmt = select(wave_table).where(wave_table.c.name == name)
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            row = conn.execute(stmt).first()
    else:
        row = engine_or_conn.execute(stmt).first()
    if row is None:
        raise CampaignError(f"no wave named {name!r} (see `campaign wave list`)")
    return dict(row._mapping)


def wave_details(engine: Engine, name: str) -> dict[str, Any]:
    """A wave's settings and its attachments (name, type, size, hash), for `wave show`."""
    wave = get_wave(engine, name)
    with engine.connect() as conn:
        wave["attachments"] = attachment_list(conn, wave["id"])
    return wave


def list_waves(engine: Engine) -> list[dict[str, Any]]:
    w, lt = wave_table.c, letter_table.c
    letters = select(lt.wave_id, func.count().label("letters")).group_by(lt.wave_id).subquery()
    stmt = (
        select(
            w.name,
            w.target,
            w.status,
            w.letter_template,
            w.nations,
            w.filters,
            w.created_at,
            w.launched_at,
            func.coalesce(letters.c.letters, 0).label("letters"),
        )
        .select_from(wave_table.outerjoin(letters, letters.c.wave_id == w.id))
        .order_by(w.created_at)
    )
    with engine.connect() as conn:
        return [{**r._mapping, "after": after_rule(r.filters)} for r in conn.execute(stmt)]


def wave_status(engine: Engine, name: str, similar_warn: int = 0) -> dict[str, Any]:
    """A wave's letters by state, its mail, and (with `similar_warn`) the targets that would get
    more than that many letters more than 90% the same text, as the letters stand now."""
    wave = get_wave(engine, name)
    lt, o = letter_table.c, outbox_table.c
    with engine.connect() as conn:
        by_kind: dict[str, dict[str, int]] = {}
        for kind, state, count in conn.execute(
            select(lt.kind, lt.state, func.count())
            .where(lt.wave_id == wave["id"])
            .group_by(lt.kind, lt.state)
        ):
            by_kind.setdefault(kind, {})[state] = count
        states = by_kind.get("letter", {})
        i = inbound_table.c
        incoming = dict(
            conn.execute(
                select(i.kind, func.count())
                .select_from(inbound_table.join(letter_table, lt.id == i.letter_id))
                .where(lt.wave_id == wave["id"])
                .group_by(i.kind)
            ).all()
        )
        # Why letters did not reach their recipient, so that none waits unexplained; and who could
        # not be reached: the target (failed, bounced) or the member (unreachable).
        undelivered = [
            {
                "state": state,
                "unreachable": "member" if state == "unreachable" else "target",
                "meaning": STATE_MEANINGS[state],
                "reason": reason or "no reason recorded",
                "letters": count,
            }
            for state, reason, count in conn.execute(
                select(lt.state, lt.bounce_reason, func.count())
                .where(lt.wave_id == wave["id"], lt.state.in_(UNDELIVERED))
                .group_by(lt.state, lt.bounce_reason)
                .order_by(func.count().desc())
            )
        ]
        outbox = dict(
            conn.execute(
                select(o.status, func.count())
                .select_from(outbox_table.join(letter_table, lt.id == o.letter_id))
                .where(lt.wave_id == wave["id"])
                .group_by(o.status)
            ).all()
        )
        # A pledge wave has no letters and no target: nothing to flood, nothing alike.
        similar = (
            similar_letters(conn, wave["id"], similar_warn)
            if similar_warn and wave["target"] != "pledge"
            else []
        )
    letters = sum(states.values())
    extra: dict[str, Any] = {}
    if wave["target"] == "pledge":
        pledged, declined = states.get("pledged", 0), states.get("declined", 0)
        extra["question"] = wave["question"]
        extra["pledges"] = {
            "pledged": pledged,
            "declined": declined,
            "no_answer": letters - pledged - declined,
        }
    if wave.get("done_label"):
        done_states = ("pledged",) if wave["target"] == "pledge" else DONE_STATES
        extra["done"] = {"label": wave["done_label"], "letters": sum(states.get(s, 0) for s in done_states)}
    return {
        "wave": name,
        "status": wave["status"],
        "target": wave["target"],
        "nations": wave["nations"],
        "filters": wave["filters"],
        "after": after_rule(wave["filters"]),
        "launched_at": wave["launched_at"],
        "one_per_target": wave["one_per_target"],
        "meeting_date": wave["meeting_date"],
        "chase_before": wave["chase_before"] if wave["meeting_date"] else None,
        "letters": letters,
        **extra,
        "states": states,
        "follow_ups": by_kind.get("follow_up", {}),
        "chasers": by_kind.get("chaser", {}),
        "incoming": incoming,
        "outbox": outbox,
        "undelivered": undelivered,
        "daily_cap": wave.get("daily_cap"),
        "similar_warn": similar_warn,
        "similar": similar,
    }
