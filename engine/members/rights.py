"""Members' data rights under UK GDPR: a copy of everything held about a member, erasure, and
the removal of old reply bodies past the retention period.

Union membership is special-category data, so erasure is real: names, addresses, email,
postcode, school, the letters' words and every message about the member are overwritten,
their links stop working and no mail goes to them again. What stays is what counts need and
identifies nobody: the member row's region, branch, constituency and employer, and each
letter's wave, target and states, so reports still add up.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, String, cast, delete, func, or_, select, update

from engine.errors import CampaignError
from engine.store.events import record_event
from engine.store.models import (
    event_table,
    failure_table,
    forgotten_table,
    inbound_table,
    letter_table,
    member_table,
    outbox_table,
    utcnow,
)
from engine.store.suppression import spellings

# Columns a subject access request never needs: secrets and internal digests.
_HIDDEN = {"row_hash", "link_nonce", "token_hash", "raw"}
_FORGOTTEN_DOMAIN = "forgotten.invalid"  # RFC 2606: never delivered anywhere


def number_hash(membership_no: str) -> str:
    """The digest kept for a forgotten member's number (it alone says nothing about them)."""
    return hashlib.sha256(f"campaign-forgotten\0{membership_no.strip()}".encode()).hexdigest()


def _plain(row: Any) -> dict[str, Any]:
    return _plain_dict(dict(row._mapping))


def _member(conn: Connection, membership_no: str) -> dict[str, Any]:
    row = conn.execute(select(member_table).where(member_table.c.membership_no == membership_no)).first()
    if row is None:
        raise CampaignError(f"no member with membership number {membership_no!r}")
    return dict(row._mapping)


def _messages_about(conn: Connection, member: dict[str, Any], letter_ids: list[int]) -> Any:
    """Incoming messages tied to the member's letters, suggested for them, or sent from their address."""
    i = inbound_table.c
    conditions = [i.from_addr.in_(spellings(member["email"]))] if member["email"] else []
    if letter_ids:
        conditions += [i.letter_id.in_(letter_ids), i.suggested_letter_id.in_(letter_ids)]
    if not conditions:
        return select(inbound_table).where(i.id.is_(None))
    return select(inbound_table).where(or_(*conditions)).order_by(i.id)


def _events_about(member: dict[str, Any]) -> Any:
    # The event log names members by number in its JSON detail; a text search finds them.
    needle = f'"{member["membership_no"]}"'
    return (
        select(event_table)
        .where(cast(event_table.c.detail, String).contains(needle, autoescape=True))
        .order_by(event_table.c.id)
    )


def export_member(engine: Engine, membership_no: str, by: str = "command line") -> dict[str, Any]:
    """Everything held about one member, for a subject access request: their details, letters
    (with every word), the emails queued for them, the messages about them, and the events
    that name them. The export itself is recorded (`members.export`, with who asked: `by`)."""
    with engine.begin() as conn:
        member = _member(conn, membership_no)
        lt = letter_table.c
        letters = [
            _plain(r)
            for r in conn.execute(select(letter_table).where(lt.member_id == member["id"]).order_by(lt.id))
        ]
        ids = [letter["id"] for letter in letters]
        o = outbox_table.c
        emails = (
            [
                _plain(r)
                for r in conn.execute(
                    select(
                        o.id,
                        o.letter_id,
                        o.kind,
                        o.to_addr,
                        o.cc_addr,
                        o.subject,
                        o.status,
                        o.created_at,
                        o.sent_at,
                    )
                    .where(o.letter_id.in_(ids))
                    .order_by(o.id)
                )
            ]
            if ids
            else []
        )
        messages = [_plain(r) for r in conn.execute(_messages_about(conn, member, ids))]
        events = [_plain(r) for r in conn.execute(_events_about(member))]
        record_event(conn, "members.export", membership_no=member["membership_no"], by=by)
    return {
        "exported_at": utcnow().isoformat(timespec="seconds"),
        "member": _plain_dict(member),
        "letters": letters,
        "emails": emails,
        "messages": messages,
        "events": events,
    }


def _plain_dict(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in _HIDDEN}
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat(timespec="seconds")
    return out


@dataclass
class ForgetResult:
    membership_no: str
    letters: int = 0
    emails_cancelled: int = 0
    messages: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def forget_member(engine: Engine, membership_no: str) -> ForgetResult:
    """Erase one member's personal data, in one transaction, keeping anonymous counts."""
    result = ForgetResult(membership_no)
    now = utcnow()
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # Overwrite what is erased rather than leave it in free space in the file.
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        member = _member(conn, membership_no)
        if member["forgotten_at"] is not None:
            raise CampaignError(f"{membership_no}: already forgotten")
        mid = member["id"]
        lt, o, i = letter_table.c, outbox_table.c, inbound_table.c
        ids = list(conn.execute(select(lt.id).where(lt.member_id == mid)).scalars())
        messages = list(conn.execute(_messages_about(conn, member, ids).with_only_columns(i.id)).scalars())
        events = list(conn.execute(_events_about(member)).mappings())
        addresses = spellings(member["email"]) if member["email"] else []
        if ids:
            # Every link dies: its digest no longer matches anything a member holds.
            for letter_id in ids:
                conn.execute(
                    update(letter_table)
                    .where(lt.id == letter_id)
                    .values(
                        body_text="",
                        final_text=None,
                        sender_address=None,
                        merge_snapshot={},
                        link_nonce=secrets.token_hex(16),
                        token_hash=secrets.token_hex(32),
                        token_expires_at=now,
                        updated_at=now,
                    )
                )
            result.letters = len(ids)
            result.emails_cancelled = conn.execute(
                update(outbox_table)
                .where(o.letter_id.in_(ids), o.status.in_(("queued", "claimed")))
                .values(status="failed", error="the member was forgotten at their request")
            ).rowcount
            # Every email to the member (all but the letters to their targets) named them.
            conn.execute(
                update(outbox_table)
                .where(o.letter_id.in_(ids), o.kind != "letter")
                .values(
                    to_addr=f"forgotten@{_FORGOTTEN_DOMAIN}", cc_addr=None, subject="(forgotten)", error=None
                )
            )
            conn.execute(
                update(outbox_table).where(o.letter_id.in_(ids), o.kind == "letter").values(cc_addr=None)
            )
        if messages:
            conn.execute(
                update(inbound_table)
                .where(i.id.in_(messages))
                .values(raw=b"", size=0, text=None, from_addr=None, subject=None, note=None, purged_at=now)
            )
            conn.execute(
                update(inbound_table)
                .where(i.id.in_(messages), i.author_addr.in_(addresses or [""]))
                .values(author_name=None, author_addr=None)
            )
        result.messages = len(messages)
        if addresses:
            conn.execute(
                update(failure_table)
                .where(failure_table.c.address.in_(addresses))
                .values(address=f"forgotten@{_FORGOTTEN_DOMAIN}", diagnostic=None)
            )
        for event in events:
            conn.execute(
                update(event_table)
                .where(event_table.c.id == event["id"])
                .values(detail=_scrub(event["detail"], {membership_no, member["email"] or membership_no}))
            )
        result.events = len(events)
        conn.execute(
            update(member_table)
            .where(member_table.c.id == mid)
            .values(
                membership_no=f"forgotten-{mid}",
                first_name="",
                last_name="",
                email=f"member-{mid}@{_FORGOTTEN_DOMAIN}",
                postcode="",
                school_urn="",
                address_line1=None,
                address_line2=None,
                address_line3=None,
                town=None,
                role=None,
                custom={},
                row_hash="forgotten",
                mp_detail=None,
                employer_detail=None,
                mail_opt_out_at=member["mail_opt_out_at"] or now,
                forgotten_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            delete(forgotten_table).where(forgotten_table.c.number_hash == number_hash(membership_no))
        )
        conn.execute(
            forgotten_table.insert().values(number_hash=number_hash(membership_no), forgotten_at=now)
        )
        # The log says a member was forgotten, never which.
        record_event(conn, "members.forget", member_id=mid, letters=result.letters, messages=result.messages)
    if engine.dialect.name == "sqlite":
        # The old pages go from the write-ahead log too, not only from the database file.
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return result


def _scrub(value: Any, secrets_: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v, secrets_) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets_) for v in value]
    if isinstance(value, str) and value in secrets_:
        return "(forgotten)"
    return value


def is_forgotten(conn: Connection, membership_no: str) -> bool:
    return (
        conn.execute(
            select(forgotten_table.c.number_hash).where(
                forgotten_table.c.number_hash == number_hash(membership_no)
            )
        ).first()
        is not None
    )


@dataclass
class PurgeResult:
    older_than_days: int
    before: str
    messages: int = 0
    bytes: int = 0
    dry_run: bool = False
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def purge_messages(engine: Engine, older_than_days: int, *, dry_run: bool = False) -> PurgeResult:
    """Remove the raw bytes and text of incoming messages received more than `older_than_days`
    ago; their kind, letter, outcome and dates stay, so states and counts do not change."""
    if older_than_days < 1:
        raise CampaignError("--older-than: give a number of days, 1 or more")
    before = utcnow() - timedelta(days=older_than_days)
    result = PurgeResult(older_than_days, before.isoformat(timespec="seconds"), dry_run=dry_run)
    i = inbound_table.c
    due = (i.received_at < before) & i.purged_at.is_(None)
    with engine.begin() as conn:
        for kind, count, size in conn.execute(
            select(i.kind, func.count(), func.sum(i.size)).where(due).group_by(i.kind)
        ):
            result.by_kind[kind] = count
            result.messages += count
            result.bytes += int(size or 0)
        if not dry_run and result.messages:
            conn.execute(
                update(inbound_table).where(due).values(raw=b"", text=None, note=None, purged_at=utcnow())
            )
            record_event(conn, "purge", messages=result.messages, older_than_days=older_than_days)
    return result
