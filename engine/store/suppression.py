"""Addresses that must get no more campaign mail, in one place for the inbox that adds them
and the sender that honours them."""

from __future__ import annotations

from datetime import datetime
from email.utils import parseaddr

from sqlalchemy import Connection, select

from engine.store.models import letter_table, member_table, outbox_table, suppression_table

# Why a letter to a suppressed address did not go, as its member and organisers read it.
SUPPRESSED_RECIPIENT = "the recipient asked not to receive email sent through the campaign"


def spellings(address: str) -> list[str]:
    """An address as a member list may hold it: bounces and complaints report it in lower case."""
    return list(dict.fromkeys([address, address.lower()]))


def suppress_address(
    conn: Connection, address: str, reason: str, inbound_id: int | None, now: datetime
) -> bool:
    """No more campaign mail to `address`: recorded, its member opted out, its queued mail held back."""
    address = address.lower()
    if is_suppressed(conn, address):
        return False
    conn.execute(
        suppression_table.insert().values(
            address=address, reason=reason[:20], inbound_id=inbound_id, created_at=now
        )
    )
    m, o, lt = member_table.c, outbox_table.c, letter_table.c
    members = select(m.id).where(m.email.in_(spellings(address)))
    conn.execute(
        member_table.update()
        .where(m.id.in_(members), m.mail_opt_out_at.is_(None))
        .values(mail_opt_out_at=now, updated_at=now)
    )
    # Union mail to the member waiting in the outbox; a letter they asked us to send still goes.
    their_letters = select(lt.id).where(lt.member_id.in_(members))
    conn.execute(
        outbox_table.update()
        .where(o.letter_id.in_(their_letters), o.status == "queued", o.kind != "letter")
        .values(status="suppressed", error=f"{address} {reason}")
    )
    # Letters members asked us to send to this address cannot go: each says so on its member's
    # page and in `wave status`, rather than waiting in the queue for ever.
    stopped = select(lt.id).where(lt.target_email.in_(spellings(address)), lt.state == "queued")
    conn.execute(
        outbox_table.update()
        .where(o.letter_id.in_(stopped), o.kind == "letter", o.status == "queued")
        .values(status="suppressed", error=f"{address} {reason}")
    )
    conn.execute(
        letter_table.update()
        .where(lt.id.in_(stopped))
        .values(state="failed", bounce_reason=SUPPRESSED_RECIPIENT, updated_at=now)
    )
    return True


def is_suppressed(conn: Connection, address: str | None) -> bool:
    if not address:
        return False
    found = conn.execute(
        select(suppression_table.c.id).where(suppression_table.c.address == address.lower())
    ).first()
    return found is not None


def suppressed_addresses(conn: Connection) -> set[str]:
    return {row[0] for row in conn.execute(select(suppression_table.c.address))}


def may_email(conn: Connection, member_id: int, address: str) -> bool:
    """False when the member opted out of campaign mail or the address complained."""
    opted_out = conn.execute(
        select(member_table.c.mail_opt_out_at).where(member_table.c.id == member_id)
    ).scalar()
    if opted_out is not None:
        return False
    return not is_suppressed(conn, parseaddr(address)[1])
