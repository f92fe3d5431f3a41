"""What staff do with incoming mail: list and read it, match it by hand, accept or dismiss what
waits for them, log paper replies, and record what a reply means."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select

from engine.errors import CampaignError
from engine.followup.drafts import NOT_YET_ANSWERED, reply_outcome
from engine.inbox.act import bounce_message, record_reply
from engine.inbox.classify import classify, parse
from engine.inbox.match import Matcher, normal_reference, suggest_letters
from engine.inbox.outcomes import check_outcome, suggest_outcome
from engine.mail.send import address_of
from engine.settings import Settings
from engine.store.events import record_event
from engine.store.models import (
    failure_table,
    inbound_table,
    letter_table,
    member_table,
    outbox_table,
    utcnow,
    wave_table,
)
from engine.store.suppression import suppress_address


def reply_for(conn: Connection, reply_id: int) -> dict[str, Any]:
    row = conn.execute(select(inbound_table).where(inbound_table.c.id == reply_id)).first()
    if row is None:
        raise CampaignError(f"no message {reply_id} (see: campaign replies list)")
    return dict(row._mapping)


def letter_by_reference(conn: Connection, reference: str) -> dict[str, Any]:
    row = conn.execute(
        select(letter_table).where(letter_table.c.reference == normal_reference(reference.strip()))
    ).first()
    if row is None:
        raise CampaignError(f"no letter with reference {reference!r}")
    return dict(row._mapping)


# -- what staff do --------------------------------------------------------------------


def list_messages(
    engine: Engine,
    *,
    unmatched: bool = False,
    kind: str | None = None,
    reference: str | None = None,
    problems: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Incoming messages, newest first, with the letter each matched and, for bounces, who failed."""
    i, lt = inbound_table.c, letter_table.c
    suggested = letter_table.alias("suggested")
    stmt = (
        select(
            i.id,
            i.from_addr.label("from"),
            i.subject,
            i.received_at.label("received"),
            i.kind,
            lt.reference,
            i.match_method,
            i.author_name,
            i.author_addr,
            i.forwarded,
            i.suggested_outcome,
            i.outcome,
            i.problem,
            i.source,
            i.triage,
            suggested.c.reference.label("suggested_reference"),
            i.authentication,
        )
        .select_from(
            inbound_table.outerjoin(letter_table, lt.id == i.letter_id).outerjoin(
                suggested, suggested.c.id == i.suggested_letter_id
            )
        )
        .order_by(i.id.desc())
    )
    if unmatched:
        # Waiting for staff: mail from people that no evidence tied to a letter, and anything
        # the evidence was too weak to act on.
        stmt = stmt.where(
            or_(
                i.triage.is_not(None),
                and_(
                    i.letter_id.is_(None),
                    i.kind.in_(("reply", "unrelated")),
                    or_(i.match_method.is_(None), i.match_method != "dismissed"),
                ),
            )
        )
    if kind:
        stmt = stmt.where(i.kind == kind)
    if reference:
        stmt = stmt.where(lt.reference == normal_reference(reference))
    if problems:
        stmt = stmt.where(i.problem.is_not(None))
    if limit:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        bounce_ids = [r["id"] for r in rows if r["kind"] == "bounce"]
        failures: dict[int, list[dict[str, Any]]] = {}
        for start in range(0, len(bounce_ids), 500):
            chunk = bounce_ids[start : start + 500]
            f = failure_table.c
            for row in conn.execute(
                select(f.inbound_id, f.address, f.status, f.diagnostic, f.permanent, outbox_table.c.kind)
                .select_from(failure_table.outerjoin(outbox_table, outbox_table.c.id == f.outbox_id))
                .where(f.inbound_id.in_(chunk))
                .order_by(f.id)
            ):
                failures.setdefault(row.inbound_id, []).append(
                    {
                        "address": row.address,
                        "status": row.status,
                        "diagnostic": row.diagnostic,
                        "permanent": row.permanent,
                        "message": row.kind,
                    }
                )
        if unmatched:
            add_suggestions(conn, rows)
    for row in rows:
        failed = failures.get(row["id"], [])
        row["failed"] = failed
        row["failed_recipient"] = failed[0]["address"] if failed else None
        row["status"] = failed[0]["status"] if failed else None
        row["bounced_message"] = failed[0]["message"] if failed else None
        row["unreachable"] = who_is_unreachable(row["bounced_message"])
    return rows


def add_suggestions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Give each message that waits for a person to say which letter it answers the letters it
    most likely answers, with the command that matches each (`suggestions`)."""
    i = inbound_table.c
    for row in rows:
        row["suggestions"] = []
    waiting = [
        r for r in rows if r["reference"] is None and r["kind"] in ("reply", "unrelated", "auto_reply")
    ]
    by_id = {r["id"]: r for r in waiting}
    ids = list(by_id)
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        for message in conn.execute(
            select(i.id, i.raw, i.from_addr, i.author_addr, i.subject, i.suggested_letter_id).where(
                i.id.in_(chunk)
            )
        ):
            by_id[message.id]["suggestions"] = suggest_letters(conn, dict(message._mapping))


def who_is_unreachable(outbox_kind: str | None) -> str | None:
    """Whom a bounce of this kind of message says we cannot reach: 'target' (the MP or employer,
    for a member's letter) or 'member' (any email of ours to the member); None when not known."""
    if outbox_kind is None:
        return None
    return "target" if outbox_kind == "letter" else "member"


# How `replies list` and `replies show` name the message a bounce is about.
BOUNCED_MESSAGES = {
    "letter": "letter to its target",
    "invitation": "member's invitation",
    "follow_up_invitation": "member's invitation (follow-up)",
    "chaser_invitation": "member's invitation (chaser)",
    "receipt": "member's receipt",
    "questionnaire": "member's questionnaire",
    "questionnaire_reminder": "member's questionnaire reminder",
}


def show_message(engine: Engine, reply_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = reply_for(conn, reply_id)
        letter = None
        if row["letter_id"]:
            letter = conn.execute(
                select(letter_table.c.reference, letter_table.c.state, letter_table.c.target_name).where(
                    letter_table.c.id == row["letter_id"]
                )
            ).first()
    raw = row.pop("raw")
    f = failure_table.c
    with engine.connect() as conn:
        # What a bounce says: who failed, the status code and the server's own words.
        row["failed"] = [
            {
                "address": r.address,
                "status": r.status,
                "diagnostic": r.diagnostic,
                "permanent": r.permanent,
                "message": r.kind,
            }
            for r in conn.execute(
                select(f.address, f.status, f.diagnostic, f.permanent, outbox_table.c.kind)
                .select_from(failure_table.outerjoin(outbox_table, outbox_table.c.id == f.outbox_id))
                .where(f.inbound_id == reply_id)
                .order_by(f.id)
            )
        ]
        row["bounced_message"] = row["failed"][0]["message"] if row["failed"] else None
        row["unreachable"] = who_is_unreachable(row["bounced_message"])
        row["suggested_reference"] = (
            conn.execute(
                select(letter_table.c.reference).where(letter_table.c.id == row["suggested_letter_id"])
            ).scalar()
            if row["suggested_letter_id"]
            else None
        )
    row["to"] = addressed_to(raw) if row["source"] != "paper" else None
    row["reference"] = letter.reference if letter else None
    row["letter_state"] = letter.state if letter else None
    row["target_name"] = letter.target_name if letter else None
    row["suggestions"] = []
    if letter is None and row["kind"] in ("reply", "unrelated", "auto_reply"):
        with engine.connect() as conn:
            row["suggestions"] = suggest_letters(conn, {**row, "raw": raw})
    return row


def addressed_to(raw: bytes) -> str | None:
    """The message's To header as one line of text (any folding or control characters gone)."""
    if not raw:
        return None
    try:
        value = BytesHeaderParser(policy=policy.default).parsebytes(raw).get("To")
    except Exception:  # a header too broken to read is shown as absent, never as an error
        return None
    if value is None:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return text[:500] or None


def raw_message(engine: Engine, reply_id: int) -> bytes:
    with engine.connect() as conn:
        return reply_for(conn, reply_id)["raw"]


def match_manually(
    engine: Engine, settings: Settings, reply_id: int, reference: str, *, by: str | None = None
) -> dict[str, Any]:
    """Staff say which letter a message answers; it then counts as that letter's reply."""
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if reply["kind"] in ("bounce", "complaint"):
            raise CampaignError(f"message {reply_id} is a {reply['kind']}, not a reply: it cannot be matched")
        letter = letter_by_reference(conn, reference)
        if reply["letter_id"] is not None:
            # Matching again would leave the first letter replied for a reply it no longer has.
            current = conn.execute(
                select(letter_table.c.reference).where(letter_table.c.id == reply["letter_id"])
            ).scalar()
            raise CampaignError(
                f"message {reply_id} is already matched to {current}: undo that match first "
                f"(campaign replies unmatch {reply_id})"
            )
        return _match(conn, settings, reply, letter, by)


def _match(
    conn: Connection, settings: Settings, reply: dict[str, Any], letter: dict[str, Any], by: str | None
) -> dict[str, Any]:
    now = utcnow()
    kind = "reply" if reply["kind"] == "unrelated" else reply["kind"]
    conn.execute(
        inbound_table.update()
        .where(inbound_table.c.id == reply["id"])
        .values(letter_id=letter["id"], match_method="staff", kind=kind, triage=None)
    )
    replied = follow_ups = 0
    if kind == "reply":
        replied, follow_ups = record_reply(
            conn, letter, reply["id"], reply["authored_at"] or reply["received_at"], settings, now
        )
    record_event(conn, "replies.match", reply=reply["id"], reference=letter["reference"], by=by)
    return {
        "reply": reply["id"],
        "reference": letter["reference"],
        "replied": bool(replied),
        "follow_up": bool(follow_ups),
    }


def accept_suggestion(
    engine: Engine, settings: Settings, reply_id: int, *, by: str | None = None
) -> dict[str, Any]:
    """Staff confirm what the engine only suggested for a message in triage, and it is done:
        a reply counts for its suggested letter, a bounce marks its message bounced (and its letter
    bounced, or unreachable when it was the member's invitation), a complaint
        suppresses the address complained about."""
    now = utcnow()
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if not reply["triage"]:
            raise CampaignError(f"message {reply_id} is not waiting for staff: nothing to accept")
        kind = reply["kind"]
        done: dict[str, Any] = {
            "reply": reply_id,
            "kind": kind,
            "suppressed": [],
            "bounced": 0,
            "unreachable": 0,
        }
        if kind in ("reply", "auto_reply", "unrelated"):
            if reply["suggested_letter_id"] is None:
                raise CampaignError(
                    f"message {reply_id} suggests no letter: say which with 'campaign replies match "
                    f"{reply_id} REFERENCE'"
                )
            letter = dict(
                conn.execute(select(letter_table).where(letter_table.c.id == reply["suggested_letter_id"]))
                .one()
                ._mapping
            )
            done.update(_match(conn, settings, reply, letter, by))
            record_event(conn, "replies.accept", reply=reply_id, kind=kind, by=by)
            return done
        elif kind == "bounce":
            classification = classify(parse(reply["raw"]))
            f = failure_table.c
            outbox_ids = set(
                conn.execute(
                    select(f.outbox_id).where(f.inbound_id == reply_id, f.outbox_id.is_not(None))
                ).scalars()
            )
            for outbox_id in outbox_ids:
                outbox = dict(
                    conn.execute(select(outbox_table).where(outbox_table.c.id == outbox_id)).one()._mapping
                )
                bounced, unreachable = bounce_message(conn, outbox, classification, now)
                done["bounced"] += bounced
                done["unreachable"] += unreachable
        elif kind == "complaint":
            analysis = Matcher(settings).analyse(conn, parse(reply["raw"]))
            if analysis.sent is not None:
                # The report may name both the letter's recipient and the member's copy: the recipient.
                addresses = [address_of(analysis.sent["to_addr"])]
            else:
                addresses = [failure.address for failure in analysis.classification.failed]
            if not addresses:
                raise CampaignError(f"message {reply_id} names no address to suppress: dismiss it instead")
            for address in addresses:
                if suppress_address(conn, address, "complaint (staff)", reply_id, now):
                    done["suppressed"].append(address.lower())
        letter_id = reply["suggested_letter_id"]
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id)
            .values(triage=None, letter_id=letter_id, match_method="staff" if letter_id else None)
        )
        record_event(conn, "replies.accept", reply=reply_id, kind=kind, by=by)
    return done


def dismiss(engine: Engine, reply_id: int, *, by: str | None = None) -> dict[str, Any]:
    """Staff looked at a message waiting for them and nothing is to be done about it."""
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if not reply["triage"] and (reply["letter_id"] or reply["kind"] not in ("reply", "unrelated")):
            raise CampaignError(f"message {reply_id} is not waiting for staff: nothing to dismiss")
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id)
            .values(triage=None, suggested_letter_id=None, match_method="dismissed")
        )
        record_event(conn, "replies.dismiss", reply=reply_id, reason=reply["triage"], by=by)
    return {"reply": reply_id, "dismissed": True}


def log_paper_reply(
    engine: Engine,
    settings: Settings,
    reference: str,
    received: datetime,
    *,
    author: str | None = None,
    scan: bytes | None = None,
    scan_name: str | None = None,
    note: str | None = None,
    by: str | None = None,
) -> dict[str, Any]:
    """A reply that came on paper: recorded against its letter, with the scan kept if given."""
    now = utcnow()
    digest = hashlib.sha256(
        b"\0".join(
            [
                reference.upper().encode(),
                received.isoformat().encode(),
                (author or "").encode(),
                scan or b"",
                (note or "").encode(),
            ]
        )
    ).hexdigest()
    with engine.begin() as conn:
        letter = letter_by_reference(conn, reference)
        key = f"paper:{digest}"
        existing = conn.execute(select(inbound_table.c.id).where(inbound_table.c.dedupe_key == key)).scalar()
        if existing is not None:
            return {"reply": existing, "reference": letter["reference"], "already": True, "follow_up": False}
        reply_id = conn.execute(
            inbound_table.insert().values(
                dedupe_key=key,
                source="paper",
                raw=scan or b"",
                size=len(scan or b""),
                received_at=received,
                ingested_at=now,
                from_addr=author or letter["target_name"],
                subject=f"Paper reply to {letter['reference']}",
                kind="reply",
                letter_id=letter["id"],
                match_method="paper",
                forwarded=False,
                author_name=author or letter["target_name"],
                authored_at=received,
                text=note,
                note=note,
                attachment_name=scan_name,
                suggested_outcome=suggest_outcome(note) if note else None,
            )
        ).inserted_primary_key[0]
        _, drafted = record_reply(conn, letter, reply_id, received, settings, now)
        record_event(conn, "replies.log", reply=reply_id, reference=letter["reference"], by=by)
    return {"reply": reply_id, "reference": letter["reference"], "already": False, "follow_up": bool(drafted)}


def set_outcome(
    engine: Engine, reply_id: int, outcome: str, settings: Settings | None = None, *, by: str | None = None
) -> dict[str, Any]:
    """Staff's reading of what a reply means for the campaign; it replaces the suggestion.

    A reply held back as a holding reply or an acknowledgement that staff now code as an answer
    (supportive, refusal, non-committal) answers its letter then: with `settings`, the letter is
    marked replied and its follow-up drafted, in the wording the new outcome picks.
    """
    outcome = check_outcome(outcome)
    now = utcnow()
    replied = drafted = 0
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if reply["kind"] != "reply":
            raise CampaignError(f"message {reply_id} is a {reply['kind']}: only replies have an outcome")
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id)
            .values(outcome=outcome, outcome_at=now)
        )
        held = reply_outcome(reply) in NOT_YET_ANSWERED and outcome not in NOT_YET_ANSWERED
        if held and settings is not None and reply["letter_id"] is not None and _from_target(conn, reply):
            letter = dict(
                conn.execute(select(letter_table).where(letter_table.c.id == reply["letter_id"]))
                .one()
                ._mapping
            )
            replied, drafted = record_reply(
                conn, letter, reply_id, reply["authored_at"] or reply["received_at"], settings, now
            )
        record_event(conn, "replies.outcome", reply=reply_id, outcome=outcome, by=by)
    return {
        "reply": reply_id,
        "outcome": outcome,
        "suggested": reply["suggested_outcome"],
        "replied": bool(replied),
        "follow_up": bool(drafted),
    }


def _from_target(conn: Connection, reply: dict[str, Any]) -> bool:
    """A reply counts for its letter unless it is the member writing in their own words."""
    if reply["forwarded"] or reply["source"] == "paper" or reply["match_method"] == "staff":
        return True
    member_email = conn.execute(
        select(member_table.c.email)
        .join(letter_table, letter_table.c.member_id == member_table.c.id)
        .where(letter_table.c.id == reply["letter_id"])
    ).scalar()
    return (reply["author_addr"] or "").lower() != (member_email or "").lower()


# -- finding a letter, dates typed by people, and taking a match back --------------------------


def received_date(value: str, field: str = "--received") -> datetime:
    """ISO (2026-11-28) or a UK date, day first (28/11/2026, 28-11-2026, 28.11.26), as UTC."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
        for pattern in ("%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y", "%d/%m/%y", "%d.%m.%y"):
            try:
                parsed = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
        if parsed is None:
            raise CampaignError(
                f"{field}: {value[:40]!r} is not a date like 28/11/2026 (day first) or 2026-11-28"
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _like(word: str) -> str:
    """A LIKE pattern that finds `word` anywhere, its own % and _ taken literally."""
    escaped = word.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_letters(engine: Engine, q: str, limit: int = 20) -> list[dict[str, Any]]:
    """Letters whose reference, member's name or target's name hold every word of `q`, newest first."""
    words = q.split()[:6]
    if not words:
        return []
    lt, m = letter_table.c, member_table.c
    stmt = (
        select(
            lt.id,
            lt.reference,
            lt.state,
            lt.kind,
            lt.target_name,
            m.first_name,
            m.last_name,
            m.membership_no,
            wave_table.c.name.label("wave"),
        )
        .join(member_table, m.id == lt.member_id)
        .join(wave_table, wave_table.c.id == lt.wave_id)
        .order_by(lt.id.desc())
        .limit(limit)
    )
    for word in words:
        # Each word may name any of them: "khan harrow" finds Aisha Khan's letter to Harrow High.
        pattern = _like(word[:80])
        stmt = stmt.where(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (lt.reference, m.first_name, m.last_name, lt.target_name)
                )
            )
        )
    with engine.connect() as conn:
        return [
            {
                "id": row.id,
                "reference": row.reference,
                "state": row.state,
                "kind": row.kind,
                "target_name": row.target_name,
                "member": " ".join(x for x in (row.first_name, row.last_name) if x),
                "membership_no": row.membership_no,
                "wave": row.wave,
            }
            for row in conn.execute(stmt)
        ]


# Why a message whose match was undone waits in the queue again.
UNMATCHED = "its match was undone by staff: say which letter it answers, or that it answers none"
# A follow-up the member has not touched yet: it can go with the reply that drafted it.
_UNTOUCHED = ("drafted", "invited", "unreachable")


def undo_match(engine: Engine, settings: Settings, reply_id: int, *, by: str | None = None) -> dict[str, Any]:
    """Take back a match (staff's or the engine's): the message waits for staff again, and its
    letter is as it was before the reply (sent, self_sent or overdue; no replied_at) unless
    another reply still counts for it, its untouched follow-up removed. One transaction.

    A holding reply had only restarted its letter's reply clock: that letter stays `sent`, and the
    next `campaign chase` marks it overdue again when its window (no longer held) has passed.
    Raises CampaignError when the member has already acted on the follow-up the reply drafted.
    """
    now = utcnow()
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if reply["letter_id"] is None:
            raise CampaignError(f"message {reply_id} is not matched to any letter: there is nothing to undo")
        if reply["kind"] not in ("reply", "auto_reply"):
            raise CampaignError(
                f"message {reply_id} is a {reply['kind']}: only a reply's match can be undone"
            )
        letter = dict(
            conn.execute(select(letter_table).where(letter_table.c.id == reply["letter_id"])).one()._mapping
        )
        # Guarded by the letter it had, so two people undoing the same match undo it once.
        if not conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id, inbound_table.c.letter_id == letter["id"])
            .values(letter_id=None, match_method=None, triage=UNMATCHED)
        ).rowcount:
            raise CampaignError(f"message {reply_id} changed while undoing its match: look at it again")
        restored: dict[str, int] = {}
        if reply["kind"] == "reply":
            restored = _unreply(conn, letter, now)
        removed = None
        # The follow-up is drafted for the first letter (a chaser's reply drafts it for the letter
        # chased), so it goes only when that letter no longer counts as replied.
        original_id = letter["parent_id"] or letter["id"]
        if letter["kind"] != "follow_up" and original_id in restored.values():
            removed = _remove_follow_up(conn, letter, reply_id)
        record_event(
            conn,
            "replies.unmatch",
            reply=reply_id,
            reference=letter["reference"],
            restored=sorted(restored),
            follow_up_removed=removed,
            by=by,
        )
    return {
        "reply": reply_id,
        "reference": letter["reference"],
        "letter_state": _state(engine, letter["id"]),
        "restored": sorted(restored),
        "follow_up_removed": removed,
    }


def _state(engine: Engine, letter_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(letter_table.c.state).where(letter_table.c.id == letter_id)).scalar_one()


def _unreply(conn: Connection, letter: dict[str, Any], now: datetime) -> dict[str, int]:
    """Each letter `mark_replied` moved for this reply (it, and the letter a chaser chased) back
    to its state before, unless another reply still counts for it: {reference: letter id}."""
    lt = letter_table.c
    ids = [letter["id"]] + ([letter["parent_id"]] if letter.get("parent_id") else [])
    restored: dict[str, int] = {}
    for row in conn.execute(select(letter_table).where(lt.id.in_(ids), lt.state == "replied")).all():
        current = dict(row._mapping)
        still = _replies_that_count(conn, current)
        if still:
            # The earliest reply left is the letter's first reply now.
            conn.execute(
                letter_table.update()
                .where(lt.id == current["id"])
                .values(replied_at=min(still), updated_at=now)
            )
            continue
        # mark_replied changed only the state and replied_at: overdue_at and sent_at tell what it was.
        if current["overdue_at"] is not None:
            before = "overdue"
        else:
            before = "sent" if current["sent_at"] is not None else "self_sent"
        conn.execute(
            letter_table.update()
            .where(lt.id == current["id"], lt.state == "replied")
            .values(state=before, replied_at=None, updated_at=now)
        )
        restored[current["reference"]] = current["id"]
    return restored


def _replies_that_count(conn: Connection, letter: dict[str, Any]) -> list[datetime]:
    """When each other matched reply that marks `letter` replied was written (see record_reply)."""
    i, lt = inbound_table.c, letter_table.c
    # A reply to a chaser marks the letter it chased replied as well.
    answered = [letter["id"]] + list(
        conn.execute(select(lt.id).where(lt.parent_id == letter["id"], lt.kind == "chaser")).scalars()
    )
    dates = []
    for row in conn.execute(select(inbound_table).where(i.letter_id.in_(answered), i.kind == "reply")):
        reply = dict(row._mapping)
        holds = reply_outcome(reply) in NOT_YET_ANSWERED and letter["target_kind"] != "mp"
        if not holds and _from_target(conn, reply):
            when = reply["authored_at"] or reply["received_at"]
            dates.append(when if when.tzinfo else when.replace(tzinfo=UTC))
    return dates


def _remove_follow_up(conn: Connection, letter: dict[str, Any], reply_id: int) -> str | None:
    """Delete the follow-up drafted for `letter`'s member in its wave, with its invitation, if the
    member has not acted on it; its reference, or None when there was none."""
    lt, o = letter_table.c, outbox_table.c
    row = conn.execute(
        select(letter_table).where(
            lt.wave_id == letter["wave_id"], lt.member_id == letter["member_id"], lt.kind == "follow_up"
        )
    ).first()
    if row is None:
        return None
    follow_up = dict(row._mapping)
    reference = follow_up["reference"]
    answered = conn.execute(
        select(inbound_table.c.id).where(inbound_table.c.letter_id == follow_up["id"])
    ).first()
    chased = conn.execute(select(lt.id).where(lt.parent_id == follow_up["id"])).first()
    if follow_up["state"] not in _UNTOUCHED or answered or chased:
        raise CampaignError(
            f"message {reply_id}: the member has already sent the follow-up ({reference} is "
            f"{follow_up['state']}), so the match cannot be undone"
        )
    outbox = conn.execute(select(o.id, o.status).where(o.letter_id == follow_up["id"])).all()
    if any(status in ("claimed", "sending", "uncertain") for _, status in outbox):
        raise CampaignError(
            f"message {reply_id}: the invitation to follow-up {reference} is being sent right now: "
            "try again in a minute"
        )
    outbox_ids = [outbox_id for outbox_id, _ in outbox]
    if outbox_ids:
        # A bounce of the invitation stays on record, no longer tied to a message that is gone.
        conn.execute(
            failure_table.update().where(failure_table.c.outbox_id.in_(outbox_ids)).values(outbox_id=None)
        )
        conn.execute(outbox_table.delete().where(o.id.in_(outbox_ids)))
    conn.execute(
        inbound_table.update()
        .where(inbound_table.c.suggested_letter_id == follow_up["id"])
        .values(suggested_letter_id=None)
    )
    conn.execute(letter_table.delete().where(lt.id == follow_up["id"]))
    return reference
