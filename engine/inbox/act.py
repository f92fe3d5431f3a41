"""Acting on what a message proves: a reply marks its letter replied and drafts the follow-up,
a bounce marks its message and letter bounced (its letter unreachable when it was the member's
invitation), a complaint suppresses its recipient."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy.engine import Dialect

from engine.followup.chase import restart_reply_clock
from engine.followup.drafts import answers_letter, draft_follow_up
from engine.inbox.classify import Classification
from engine.inbox.match import AWAITING, Analysis, Matcher
from engine.mail.outbox import INVITATIONS
from engine.mail.send import address_of
from engine.settings import Settings
from engine.store.db import FastQuery, without_nul
from engine.store.models import (
    failure_table,
    letter_table,
    outbox_table,
)
from engine.store.states import mark_bounced
from engine.store.suppression import suppress_address


@dataclass
class Effects:
    """What acting on one message changed."""

    letters_replied: int = 0
    letters_bounced: int = 0
    # Letters whose member's invitation bounced: the member cannot be reached (not a target failure).
    members_unreachable: int = 0
    addresses_suppressed: int = 0
    follow_ups: int = 0


def act(
    conn: Connection, inbound_id: int, analysis: Analysis, matcher: Matcher, settings: Settings, now: datetime
) -> Effects:
    """What the evidence proves, done; what it only suggests was set aside for staff by the matcher."""
    done = Effects()
    if not acts_on(analysis):
        return done
    if analysis.kind == "bounce":
        record_failures(conn, inbound_id, analysis, matcher)
        if analysis.sent is not None:
            bounced, unreachable = bounce_message(conn, analysis.sent, analysis.classification, now)
            done.letters_bounced += bounced
            done.members_unreachable += unreachable
    elif analysis.kind == "complaint":
        sent = analysis.sent
        # Only the recipient of the message complained about: never an address the report lists.
        if (
            sent is not None
            and analysis.triage is None
            and suppress_address(conn, address_of(sent["to_addr"]), "complaint", inbound_id, now)
        ):
            done.addresses_suppressed += 1
    elif analysis.kind == "reply" and analysis.letter is not None and counts_as_reply(analysis):
        replied, drafted = record_reply(
            conn, analysis.letter, inbound_id, analysis.authored_at or now, settings, now
        )
        done.letters_replied += replied
        done.follow_ups += drafted
    return done


def acts_on(analysis: Analysis) -> bool:
    """Whether `act` may change anything: an auto-reply or a reply tied to no letter changes
    nothing, and then needs no savepoint around it."""
    if analysis.kind == "bounce":
        return bool(analysis.classification.failed) or analysis.sent is not None
    if analysis.kind == "complaint":
        return analysis.sent is not None and analysis.triage is None
    return analysis.kind == "reply" and analysis.letter is not None and counts_as_reply(analysis)


def record_reply(
    conn: Connection,
    letter: dict[str, Any],
    inbound_id: int,
    replied_at: datetime,
    settings: Settings,
    now: datetime,
) -> tuple[int, int]:
    """(letters replied, follow-ups drafted) for a target's reply to `letter`.

    A reply that answers marks the letter replied and drafts its follow-up; a holding reply or
    an acknowledgement (coded or suggested) to a letter that is chased (not an MP's: MPs are not
    chased, and "I have asked the minister" is their answer) leaves it awaiting an answer, its
    reply clock restarted.
    """
    if letter["target_kind"] != "mp" and not answers_letter(conn, inbound_id):
        restart_reply_clock(conn, letter, now)
        return 0, 0
    replied = mark_replied(conn, letter, replied_at, now)
    drafted = bool(replied and follow_up(conn, letter, inbound_id, settings, now))
    return replied, int(drafted)


def counts_as_reply(analysis: Analysis) -> bool:
    """A member writing to us in their own words is not their target's reply."""
    if analysis.forwarded is not None:
        return True
    return not analysis.from_member


def record_failures(conn: Connection, inbound_id: int, analysis: Analysis, matcher: Matcher) -> None:
    """Every failed recipient a bounce names, with the message it is (or seems to be) about."""
    failed = analysis.classification.failed
    if not failed:
        return
    sent = (
        {}
        if analysis.sent is not None
        else matcher.messages_to(conn, [f.address for f in failed], analysis.suggested)
    )
    rows = []
    for failure in failed:
        outbox = analysis.sent or sent.get(failure.address.lower())
        rows.append(
            without_nul(
                {
                    "inbound_id": inbound_id,
                    "address": failure.address[:320],
                    "status": (failure.status or None) and failure.status[:12],
                    "diagnostic": failure.diagnostic,
                    "permanent": failure.permanent,
                    "outbox_id": outbox["id"] if outbox else None,
                }
            )
        )
    # One statement for them all: a list server's bounce can name thousands.
    conn.execute(failure_table.insert(), rows)


def bounce_message(
    conn: Connection, outbox: dict[str, Any], classification: Classification, now: datetime
) -> tuple[int, int]:
    """A message of ours failed for good: it is marked bounced, and so is its letter unless only
    the member's copy failed (the letter itself then reached its recipient).

    (letters bounced, members unreachable): a letter to its target that came back is `bounced`;
    a letter whose member's invitation came back is `unreachable`, as the member never saw it.
    """
    cc = address_of(outbox["cc_addr"]).lower() if outbox.get("cc_addr") else None
    bounced = unreachable = 0
    for failure in classification.failed:
        if not failure.permanent or (cc and failure.address.lower() == cc):
            continue
        # One line however the server folded it: it is shown in wave status and on the member's page.
        reason = " ".join(" ".join(x for x in (failure.status, failure.diagnostic) if x).split())[:500]
        reason = reason.replace("\0", "") or "bounced"
        conn.execute(
            outbox_table.update()
            .where(outbox_table.c.id == outbox["id"], outbox_table.c.status.in_(("sent", "uncertain")))
            .values(status="bounced", error=reason)
        )
        if outbox["kind"] == "letter":
            bounced += mark_bounced(conn, outbox["letter_id"], reason, member_side=False)
        elif outbox["kind"] in INVITATIONS:
            unreachable += mark_bounced(conn, outbox["letter_id"], reason, member_side=True)
    return bounced, unreachable


def follow_up(
    conn: Connection, letter: dict[str, Any], inbound_id: int, settings: Settings, now: datetime
) -> bool:
    return draft_follow_up(conn, letter, inbound_id, settings, now)


# Built once, as ingest runs it for every reply.
_MARK_REPLIED = (
    letter_table.update()
    .where(letter_table.c.id.in_(bindparam("ids", expanding=True)), letter_table.c.state.in_(AWAITING))
    .values(state="replied", replied_at=bindparam("at"), updated_at=bindparam("now"))
)
# Compiled for each database kind it has run on (see FastQuery).
_mark_replied: weakref.WeakKeyDictionary[Dialect, FastQuery] = weakref.WeakKeyDictionary()


def mark_replied(conn: Connection, letter: dict[str, Any], replied_at: datetime, now: datetime) -> int:
    """sent/self-sent/overdue → replied, for the letter and, for a chaser, the letter it chased."""
    ids = [letter["id"]] + ([letter["parent_id"]] if letter.get("parent_id") else [])
    queries = _mark_replied.get(conn.dialect)
    if queries is None:
        queries = _mark_replied[conn.dialect] = FastQuery(_MARK_REPLIED, conn.dialect)
    done = queries.execute(conn, ids=ids, at=replied_at, now=now)
    return 1 if done else 0
