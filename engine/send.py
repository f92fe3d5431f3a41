"""The sending worker: claims queued messages, delivers them, and records what happened.

Each message moves queued → claimed → sending → sent (or back to queued with a
later attempt time on a temporary failure, or failed on a permanent one), and
every move is committed on its own. A worker killed at any moment therefore
leaves claimed messages, which the next worker puts back in the queue, and at
most one message in `sending`, whose SMTP transaction may or may not have
finished: it becomes `uncertain` and is resent only when asked.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from .errors import CampaignError
from .events import record_event
from .models import letter_table, outbox_table, send_control_table, utcnow, wave_table
from .outbox import build_message, email_context
from .renderer import WaveRenderer
from .settings import Settings
from .smtp import DeliveryError
from .states import mark_invited, mark_sent

MAX_ATTEMPTS = 5
FIRST_RETRY = timedelta(minutes=1)
LEASE = timedelta(minutes=15)  # claims older than this from another machine are abandoned


class Transport:  # the protocol both transports in engine.smtp follow
    description: str

    def send(self, data: bytes, mail_from: str, recipients: list[str], name: str) -> Any: ...

    def close(self) -> None: ...


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _abandoned(claimed_by: str | None, claimed_at: datetime | None, now: datetime) -> bool:
    """Whether a claim's worker is gone: dead on this machine, or silent too long elsewhere."""
    if not claimed_by:
        return True
    host, _, rest = claimed_by.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        return not _pid_alive(int(pid))
    return claimed_at is None or now - claimed_at > LEASE


@dataclass
class Recovery:
    requeued: int = 0
    uncertain: int = 0


def recover_abandoned(engine: Engine) -> Recovery:
    """Put back what dead workers claimed; mark what they were mid-way through sending as uncertain."""
    o = outbox_table.c
    now = utcnow()
    recovery = Recovery()
    with engine.begin() as conn:
        rows = conn.execute(
            select(o.id, o.status, o.claimed_by, o.claimed_at).where(o.status.in_(("claimed", "sending")))
        ).all()
        for message_id, status, claimed_by, claimed_at in rows:
            if not _abandoned(claimed_by, claimed_at, now):
                continue
            if status == "claimed":
                conn.execute(
                    outbox_table.update()
                    .where(o.id == message_id, o.status == "claimed")
                    .values(status="queued", claimed_by=None, claimed_at=None)
                )
                recovery.requeued += 1
            else:
                conn.execute(
                    outbox_table.update()
                    .where(o.id == message_id, o.status == "sending")
                    .values(
                        status="uncertain",
                        error="the worker stopped mid-transaction: it may or may not have been sent",
                    )
                )
                recovery.uncertain += 1
        if recovery.requeued or recovery.uncertain:
            record_event(conn, "send.recover", requeued=recovery.requeued, uncertain=recovery.uncertain)
    return recovery


def resend_uncertain(engine: Engine) -> int:
    """Queue again every message whose delivery is uncertain (it may arrive twice)."""
    o = outbox_table.c
    with engine.begin() as conn:
        count = conn.execute(
            outbox_table.update().where(o.status == "uncertain").values(status="queued", error=None)
        ).rowcount
        record_event(conn, "send.resend_uncertain", messages=count)
    return count


def pause_state(engine: Engine) -> tuple[datetime | None, str | None]:
    with engine.connect() as conn:
        row = conn.execute(select(send_control_table).where(send_control_table.c.id == 1)).first()
    return (row.paused_at, row.reason) if row else (None, None)


def set_paused(engine: Engine, reason: str | None) -> None:
    c = send_control_table.c
    with engine.begin() as conn:
        values = {"paused_at": utcnow() if reason else None, "reason": reason}
        if conn.execute(send_control_table.update().where(c.id == 1).values(**values)).rowcount == 0:
            conn.execute(send_control_table.insert().values(id=1, **values))
        record_event(conn, "send.pause" if reason else "send.resume", reason=reason)


def claim(engine: Engine, worker: str, limit: int) -> list[int]:
    """Claim up to `limit` due messages for this worker, oldest first.

    On PostgreSQL, FOR UPDATE SKIP LOCKED lets several workers claim at once
    without waiting on or taking each other's messages; on SQLite the single
    UPDATE holds the write lock, which gives the same guarantee.
    """
    o = outbox_table.c
    now = utcnow()
    with engine.begin() as conn:
        due = (
            select(o.id)
            .where(o.status == "queued", or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))
            .order_by(o.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list(conn.execute(due).scalars())
        if not ids:
            return []
        conn.execute(
            outbox_table.update()
            .where(o.id.in_(ids), o.status == "queued")
            .values(status="claimed", claimed_by=worker, claimed_at=now)
        )
        return list(
            conn.execute(
                select(o.id).where(o.id.in_(ids), o.claimed_by == worker, o.status == "claimed")
            ).scalars()
        )


@dataclass
class SendResult:
    transport: str
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    recovered: Recovery = field(default_factory=Recovery)
    paused: str | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["recovered"] = dict(self.recovered.__dict__)
        return data


def send_outbox(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    *,
    rate: float = 5.0,
    once: bool = True,
    limit: int | None = None,
    pause_after: int = 10,
    batch: int = 20,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    on_message: Callable[[str], None] | None = None,
) -> SendResult:
    """Deliver queued messages until the queue is empty (`once`) or forever, at most `rate` a second."""
    paused_at, reason = pause_state(engine)
    if paused_at is not None:
        raise CampaignError(
            f"sending is paused since {paused_at:%d %b %H:%M}: {reason}; run `campaign send --resume`"
        )
    result = SendResult(transport=transport.description)
    result.recovered = recover_abandoned(engine)
    worker = worker_id()
    renderers: dict[int, tuple[dict[str, Any], WaveRenderer]] = {}
    interval = 1.0 / rate if rate > 0 else 0.0
    next_slot = time.monotonic()
    failures_in_a_row = 0
    handled = 0
    try:
        while limit is None or handled < limit:
            ids = claim(engine, worker, min(batch, limit - handled) if limit else batch)
            if not ids:
                if once:
                    break
                sleep(poll)
                continue
            for position, message_id in enumerate(ids):
                wait = next_slot - time.monotonic()
                if wait > 0:
                    sleep(wait)
                next_slot = max(next_slot, time.monotonic()) + interval
                outcome = _deliver_one(engine, settings, transport, worker, message_id, renderers)
                handled += 1
                if outcome == "sent":
                    result.sent += 1
                    failures_in_a_row = 0
                else:
                    kind, detail = outcome
                    result.errors.append(f"message {message_id}: {detail}")
                    if kind == "retrying":
                        result.retrying += 1
                    else:
                        result.failed += 1
                    failures_in_a_row += 1
                    if kind == "fatal" or failures_in_a_row >= pause_after:
                        why = (
                            f"{failures_in_a_row} failures in a row, the last: {detail}"
                            if kind != "fatal"
                            else detail
                        )
                        set_paused(engine, why)
                        result.paused = why
                        _release(engine, worker, ids[position + 1 :])
                        return result
                if on_message is not None:
                    on_message(str(outcome if isinstance(outcome, str) else outcome[0]))
    finally:
        transport.close()
        _release(engine, worker, None)
    with engine.begin() as conn:
        record_event(conn, "send", sent=result.sent, retrying=result.retrying, failed=result.failed)
    return result


def _release(engine: Engine, worker: str, ids: list[int] | None) -> None:
    """Give claimed-but-untouched messages back to the queue."""
    o = outbox_table.c
    condition = and_(o.status == "claimed", o.claimed_by == worker)
    if ids is not None:
        if not ids:
            return
        condition = and_(condition, o.id.in_(ids))
    with engine.begin() as conn:
        conn.execute(
            outbox_table.update().where(condition).values(status="queued", claimed_by=None, claimed_at=None)
        )


def _deliver_one(
    engine: Engine,
    settings: Settings,
    transport: Transport,
    worker: str,
    message_id: int,
    renderers: dict[int, tuple[dict[str, Any], WaveRenderer]],
) -> str | tuple[str, str]:
    o, lt = outbox_table.c, letter_table.c
    with engine.begin() as conn:
        row = conn.execute(
            select(outbox_table, *[c.label(f"l_{c.name}") for c in letter_table.c])
            .select_from(outbox_table.join(letter_table, lt.id == o.letter_id))
            .where(o.id == message_id)
        ).one()
        data = dict(row._mapping)
        letter = {k[2:]: v for k, v in data.items() if k.startswith("l_")}
        if letter["wave_id"] not in renderers:
            wave = dict(
                conn.execute(select(wave_table).where(wave_table.c.id == letter["wave_id"])).one()._mapping
            )
            renderers[letter["wave_id"]] = (wave, WaveRenderer(wave["frozen"]))
        # Committed before the SMTP transaction starts: if this process dies
        # from here on, the message is known to be in doubt.
        moved = conn.execute(
            outbox_table.update()
            .where(o.id == message_id, o.status == "claimed", o.claimed_by == worker)
            .values(status="sending", attempts=o.attempts + 1)
        ).rowcount
    if not moved:
        return ("skipped", "no longer claimed by this worker")
    wave, renderer = renderers[letter["wave_id"]]
    now = utcnow()
    try:
        payload = build_message(data, letter, wave, renderer, settings, date=now)
    except CampaignError as exc:
        _finish(engine, message_id, status="failed", error=f"cannot build the message: {exc}")
        return ("failed", str(exc))
    mail_from = parseaddr(settings.mail_from)[1]
    if settings.bounce_domain:
        # VERP: a bounce comes back to an address that names the letter.
        mail_from = f"bounces+{letter['reference']}@{settings.bounce_domain}"
    recipients = [parseaddr(data["to_addr"])[1]]
    if data.get("cc_addr"):
        recipients.append(parseaddr(data["cc_addr"])[1])
    name = f"{message_id:08d}-{data['kind']}-{letter['reference']}"
    try:
        delivery = transport.send(payload, mail_from, recipients, name)
    except DeliveryError as exc:
        if exc.fatal:
            _finish(engine, message_id, status="queued", error=str(exc), attempts_back=True)
            return ("fatal", str(exc))
        if exc.temporary and data["attempts"] + 1 < MAX_ATTEMPTS:
            delay = FIRST_RETRY * 2 ** data["attempts"]
            _finish(engine, message_id, status="queued", error=str(exc), next_attempt_at=now + delay)
            return ("retrying", str(exc))
        _finish(engine, message_id, status="failed", error=str(exc))
        return ("failed", str(exc))
    with engine.begin() as conn:
        conn.execute(
            outbox_table.update()
            .where(o.id == message_id)
            .values(
                status="sent",
                sent_at=now,
                smtp_response=delivery.response,
                error=None,
                claimed_by=None,
                next_attempt_at=None,
            )
        )
        if data["kind"] == "invitation":
            mark_invited(conn, letter["id"])
        elif data["kind"] == "letter" and mark_sent(conn, letter["id"]):
            queue_receipt(conn, letter, renderer, wave, settings, now)
    return "sent"


def _finish(
    engine: Engine,
    message_id: int,
    *,
    status: str,
    error: str,
    next_attempt_at: datetime | None = None,
    attempts_back: bool = False,
) -> None:
    o = outbox_table.c
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "claimed_by": None,
        "claimed_at": None,
        "next_attempt_at": next_attempt_at,
    }
    if attempts_back:
        values["attempts"] = o.attempts - 1  # the relay refused us, not this message
    with engine.begin() as conn:
        conn.execute(outbox_table.update().where(o.id == message_id).values(**values))


def queue_receipt(
    conn: Any,
    letter: dict[str, Any],
    renderer: WaveRenderer,
    wave: dict[str, Any],
    settings: Settings,
    now: datetime,
) -> None:
    """Queue the member's receipt, in the transaction that records their letter as sent."""
    context = email_context(letter, wave, settings)
    subject, _, _ = renderer.receipt(context)
    member = context["member"]
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    conn.execute(
        outbox_table.insert().values(
            letter_id=letter["id"],
            kind="receipt",
            to_addr=formataddr((member["name"], member["email"])),
            subject=subject,
            message_id=f"<{letter['reference']}.receipt@{domain}>",
            status="queued",
            attempts=0,
            created_at=now,
        )
    )
