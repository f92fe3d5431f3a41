"""Links that ran out: staff extend a member's link, or the member asks for it to be sent again.

A member keeps one link per wave, so renewing never makes a new one: the
letters still waiting for the member's choice get a new expiry, and the same
link works again. A member asking from their page only ever causes an email to
the address on file for them, at most one every quarter of an hour and a few
a day, so the page cannot be used to send mail anywhere or to flood anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr

from sqlalchemy import Connection, Engine, func, select

from engine.letters.confirm import MemberLetter, MemberWave
from engine.letters.links import new_message_id
from engine.settings import Settings
from engine.store.events import record_event
from engine.store.models import letter_table, member_table, outbox_table, utcnow
from engine.store.suppression import may_email

# The invitation that goes with each kind of letter: sending it again sends the link again.
INVITATION_KIND = {"letter": "invitation", "follow_up": "follow_up_invitation", "chaser": "chaser_invitation"}
NEW_LINK_GAP = timedelta(minutes=15)
NEW_LINKS_PER_DAY = 3


@dataclass
class Renewal:
    references: list[str]  # the letters whose link was extended (those still waiting for a choice)
    expires_at: datetime | None  # when the link runs out now; None when nothing was waiting


def _extend(conn: Connection, wave_id: int, member_id: int, days: int, now: datetime) -> Renewal:
    lt = letter_table.c
    waiting = (lt.wave_id == wave_id, lt.member_id == member_id, lt.state.in_(("drafted", "invited")))
    references = list(conn.execute(select(lt.reference).where(*waiting).order_by(lt.id)).scalars())
    if not references:
        return Renewal([], None)
    expires_at = now + timedelta(days=days)
    conn.execute(letter_table.update().where(*waiting).values(token_expires_at=expires_at, updated_at=now))
    return Renewal(references, expires_at)


def renew_link(engine: Engine, found: MemberLetter, now: datetime | None = None) -> Renewal:
    """Staff: make a member's link work again for the wave's link_days, from now, for every
    letter of theirs in the wave still waiting for their choice."""
    now = now or utcnow()
    letter = found.letter
    with engine.begin() as conn:
        renewal = _extend(conn, letter["wave_id"], letter["member_id"], found.wave["link_days"], now)
        if renewal.references:
            record_event(
                conn,
                "letters.link_renewed",
                references=renewal.references,
                until=renewal.expires_at.isoformat() if renewal.expires_at else None,
            )
    return renewal


def send_new_link(engine: Engine, settings: Settings, page: MemberWave, now: datetime | None = None) -> bool:
    """The member asked for a working link: renew it and email it to the member's address on
    file. False, doing nothing, when nothing waits for them, they asked too recently or too
    often, or they may not be emailed. The page says the same either way."""
    current = page.current
    if current is None:
        return False
    now = now or utcnow()
    letter = current.letter
    kind = INVITATION_KIND[letter["kind"]]
    ids = [found.letter["id"] for found in page.letters]
    o = outbox_table.c
    with engine.begin() as conn:
        recent = conn.execute(
            select(func.count(), func.max(o.created_at)).where(
                o.letter_id.in_(ids),
                o.kind.in_(INVITATION_KIND.values()),
                o.created_at > now - timedelta(days=1),
            )
        ).one()
        if recent[0] >= NEW_LINKS_PER_DAY or (recent[1] is not None and recent[1] > now - NEW_LINK_GAP):
            return False
        first = conn.execute(
            select(o.subject).where(o.letter_id == letter["id"], o.kind == kind).order_by(o.id).limit(1)
        ).first()
        member = conn.execute(
            select(member_table.c.first_name, member_table.c.last_name, member_table.c.email).where(
                member_table.c.id == letter["member_id"]
            )
        ).one()
        to_addr = formataddr((f"{member.first_name} {member.last_name}", member.email))
        # No invitation ever went (the member was not to be emailed): none goes now either.
        if first is None or not member.email or not may_email(conn, letter["member_id"], to_addr):
            return False
        renewal = _extend(conn, letter["wave_id"], letter["member_id"], current.wave["link_days"], now)
        domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
        conn.execute(
            outbox_table.insert().values(
                letter_id=letter["id"],
                kind=kind,
                to_addr=to_addr,
                subject=first.subject,
                message_id=new_message_id(letter["reference"], kind, domain),
                status="queued",
                attempts=0,
                created_at=now,
            )
        )
        record_event(
            conn,
            "letters.new_link_sent",
            reference=letter["reference"],
            until=renewal.expires_at.isoformat() if renewal.expires_at else None,
        )
    return True
