"""The sending worker: claims queued messages, delivers them, and records what happened.

Each message moves queued → claimed → sending → sent (or back to queued with a
later attempt time on a temporary failure, or failed on a permanent one), and
every move is committed on its own. A worker killed at any moment therefore
leaves claimed messages, which the next worker puts back in the queue, and at
most one message in `sending`, whose SMTP transaction may or may not have
finished: it becomes `uncertain` and is resent only when asked.

Longer than most modules because the claim, the delivery and the recording of
one message are one idea whose order is the guarantee; splitting them would
hide it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import formataddr, parseaddr
from typing import Any

from sqlalchemy import Engine, and_, bindparam, or_, select

from engine.errors import CampaignError
from engine.letters.links import new_message_id, verp_tag
from engine.letters.render import WaveRenderer
from engine.letters.waves import effective_daily_cap
from engine.mail.daily_cap import DailyCap, london_day, next_day_start
from engine.mail.outbox import (
    INVITATIONS,
    build_message,
    build_problem,
    check_sender,
    email_context,
    load_wave,
    set_aside,
)
from engine.mail.smtp import DeliveryError
from engine.settings import Settings
from engine.store.db import FastStatement
from engine.store.events import record_event
from engine.store.models import letter_table, outbox_table, send_control_table, utcnow, wave_table
from engine.store.states import mark_invited, mark_sent, mark_undelivered
from engine.store.suppression import SUPPRESSED_RECIPIENT, suppressed_addresses

MAX_ATTEMPTS = 5
FIRST_RETRY = timedelta(minutes=1)
LEASE = timedelta(minutes=15)  # claims older than this from another machine are abandoned


class Transport:  # the protocol both transports in engine.mail.smtp follow
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


def claim(engine: Engine, worker: str, limit: int, now: datetime | None = None) -> list[int]:
    """Claim up to `limit` due messages for this worker, oldest first, in one statement.

    On PostgreSQL, FOR UPDATE SKIP LOCKED lets several workers claim at once
    without waiting on or taking each other's messages (and the UPDATE checks
    again that each is still queued); on SQLite the UPDATE holds the write lock,
    which gives the same guarantee.
    """
    o = outbox_table.c
    now = now or utcnow()
    with engine.begin() as conn:
        due = (
            select(o.id)
            .where(o.status == "queued", or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))
            .order_by(o.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claimed = conn.execute(
            outbox_table.update()
            .where(o.id.in_(due.scalar_subquery()), o.status == "queued")
            .values(status="claimed", claimed_by=worker, claimed_at=now)
            .returning(o.id)
        ).scalars()
        return sorted(claimed)  # RETURNING keeps no order


@dataclass
class SendResult:
    transport: str
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    # Letters that reached their target's daily cap: queued again for the next day.
    held: int = 0
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
    batch: int | None = None,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    on_message: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> SendResult:
    """Deliver queued messages until the queue is empty (`once`) or forever, at most `rate` a second.
    `progress` hears of every message handled, whatever became of it; `clock` says what time it is
    (what is due, and which day a target's daily cap counts)."""
    check_sender(settings)
    paused_at, reason = pause_state(engine)
    if paused_at is not None:
        raise CampaignError(
            f"sending is paused since {paused_at:%d %b %H:%M}: {reason}; run `campaign send --resume`"
        )
    if batch is None:
        # Claim about two seconds' worth at a time: each claim costs a few queries, and a
        # killed worker's claimed messages go back to the queue anyway.
        batch = max(20, min(200, int(rate * 2))) if rate > 0 else 200
    result = SendResult(transport=transport.description)
    result.recovered = recover_abandoned(engine)
    delivery = _Delivery(engine, settings, transport, worker_id(), clock)
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="build")
    interval = 1.0 / rate if rate > 0 else 0.0
    next_slot = time.monotonic()
    failures_in_a_row = 0
    handled = 0
    try:
        while limit is None or handled < limit:
            rows = delivery.claim(min(batch, limit - handled) if limit else batch)
            if not rows:
                if once:
                    break
                sleep(poll)
                continue
            # Messages are built a little ahead, in a thread, while this one waits on
            # the SMTP server and the database (both release the GIL).
            built = builder.map(delivery.build, rows)
            for position, (row, payload) in enumerate(zip(rows, built, strict=True)):
                wait = next_slot - time.monotonic()
                if wait > 0:
                    sleep(wait)
                next_slot = max(next_slot, time.monotonic()) + interval
                outcome, detail = delivery.deliver(row, payload)
                handled += 1
                if progress is not None:
                    progress(1)
                if outcome == "skipped":
                    continue
                if outcome == "held":
                    result.held += 1
                    if on_message is not None:
                        on_message(outcome)
                    continue
                if outcome == "sent":
                    result.sent += 1
                    failures_in_a_row = 0
                elif outcome == "unbuildable":
                    # The message's own data is at fault, not the relay: it never pauses sending.
                    result.errors.append(f"message {row['id']}: {detail}")
                    result.failed += 1
                    outcome = "failed"
                else:
                    result.errors.append(f"message {row['id']}: {detail}")
                    if outcome == "retrying":
                        result.retrying += 1
                    else:
                        result.failed += 1
                    failures_in_a_row += 1
                    if outcome == "fatal" or failures_in_a_row >= pause_after:
                        why = (
                            detail
                            if outcome == "fatal"
                            else f"{failures_in_a_row} failures in a row, the last: {detail}"
                        )
                        delivery.flush()
                        set_paused(engine, why)
                        result.paused = why
                        _release(engine, delivery.worker, [r["id"] for r in rows[position + 1 :]])
                        return result
                if on_message is not None:
                    on_message(outcome)
    finally:
        builder.shutdown(wait=True, cancel_futures=True)
        try:
            delivery.close()
            delivery.flush()
        finally:
            transport.close()
            _release(engine, delivery.worker, None)
    with engine.begin() as conn:
        record_event(
            conn, "send", sent=result.sent, retrying=result.retrying, failed=result.failed, held=result.held
        )
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


_o = outbox_table.c
# Built once: constructing SQLAlchemy statements per message costs more than running them.
_START = (
    outbox_table.update()
    .where(_o.id == bindparam("mid"), _o.status == "claimed", _o.claimed_by == bindparam("worker"))
    .values(status="sending", attempts=_o.attempts + 1)
)
_SENT = (
    outbox_table.update()
    .where(_o.id == bindparam("mid"))
    .values(
        status="sent",
        sent_at=bindparam("now"),
        smtp_response=bindparam("response"),
        error=None,
        claimed_by=None,
        next_attempt_at=None,
    )
)
# Over its target's daily cap: back to the queue, untried, until the next day starts.
_HOLD = (
    outbox_table.update()
    .where(_o.id == bindparam("mid"), _o.status == "claimed", _o.claimed_by == bindparam("worker"))
    .values(status="queued", claimed_by=None, claimed_at=None, next_attempt_at=bindparam("retry_at"))
)
_FINISH = (
    outbox_table.update()
    .where(_o.id == bindparam("mid"))
    .values(
        status=bindparam("status"),
        error=bindparam("error"),
        claimed_by=None,
        claimed_at=None,
        next_attempt_at=bindparam("retry_at"),
        attempts=_o.attempts + bindparam("attempts_delta"),
    )
)
# What building and recording a message reads of its letter: reading every column (a dozen
# timestamps among them) costs more per message than the database writes.
_LETTER_COLUMNS = (
    "id", "wave_id", "member_id", "reference", "kind", "state", "subject", "body_text", "target_kind",
    "target_key", "target_name", "target_email", "target_salutation", "target_address", "merge_snapshot",
    "final_text", "sender_address", "link_nonce", "sent_at",
)  # fmt: skip
_BATCH = (
    select(outbox_table, *[letter_table.c[name].label(f"l_{name}") for name in _LETTER_COLUMNS])
    .select_from(outbox_table.join(letter_table, letter_table.c.id == _o.letter_id))
    .where(_o.id.in_(bindparam("ids", expanding=True)))
    .order_by(_o.id)
)


class _Delivery:
    """One worker's deliveries.

    Each message's outcome is recorded in the same transaction that marks the
    next message `sending`, so a message costs one commit, and a worker still
    has at most one message in `sending` at any moment.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        transport: Transport,
        worker: str,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.engine, self.settings, self.transport, self.worker = engine, settings, transport, worker
        self.clock = clock
        self.renderers: dict[int, tuple[dict[str, Any], WaveRenderer]] = {}
        self.pending: Callable[[Any], None] | None = None
        self.pending_plain = False  # whether `pending` may run in a pipeline
        # psycopg 3 sends several statements without waiting for each answer (a pipeline).
        self.pipelines = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self.conn: Any = None
        self.domain_from = parseaddr(settings.mail_from)[1]
        dialect = engine.dialect
        self.start, self.sent = FastStatement(_START, dialect), FastStatement(_SENT, dialect)
        self.finish = FastStatement(_FINISH, dialect)
        self.hold = FastStatement(_HOLD, dialect)
        self.daily_cap = DailyCap(dialect)
        self.caps: dict[int, int | None] = {}  # each wave's daily_cap, as of the last claim
        self.suppressed: set[str] = set()

    def claim(self, limit: int) -> list[dict[str, Any]]:
        self.flush()  # a sent letter queues its receipt: let the next claim see it
        ids = claim(self.engine, self.worker, limit, self.clock())
        if not ids:
            return []
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(_BATCH, {"ids": ids})]
            # Addresses that complained: few, and read once per batch rather than per message.
            self.suppressed = suppressed_addresses(conn)
            # Read again every batch: `wave edit --daily-cap` may change it while a worker runs.
            wave_ids = {row["l_wave_id"] for row in rows}
            w = wave_table.c
            self.caps.update(conn.execute(select(w.id, w.daily_cap).where(w.id.in_(wave_ids))).all())
            for row in rows:
                if row["l_wave_id"] not in self.renderers:
                    self.renderers[row["l_wave_id"]] = load_wave(conn, row["l_wave_id"])
        return rows

    def flush(self) -> None:
        if self.pending is not None:
            with self.engine.begin() as conn:
                self.pending(conn)
            self.pending = None

    def connection(self) -> Any:
        """The worker's own connection for its per-message transactions, opened on first use.

        Its commits wait for the disk on PostgreSQL as everywhere: the commit that marks a
        message `sending` is what keeps it from going twice after any crash, the database
        server's own included. Several workers share the wait (the server flushes their
        commits together), which is why they add up.
        """
        if self.conn is None:
            self.conn = self.engine.connect()
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def build(self, data: dict[str, Any]) -> bytes | Exception:
        """The message's bytes (its Date is set again if it waits), or why it cannot be built."""
        letter = {k[2:]: v for k, v in data.items() if k.startswith("l_")}
        data["letter"] = letter  # deliver() needs it too
        try:
            wave, renderer = self.renderers[letter["wave_id"]]
            return build_message(data, letter, wave, renderer, self.settings, date=self.clock())
        except Exception as exc:  # whatever the cause, one message must not stop the rest
            return exc

    def deliver(self, data: dict[str, Any], payload: bytes | Exception) -> tuple[str, str]:
        message_id = data["id"]
        # One connection kept for the worker's deliveries: checking one out of the
        # pool for every message costs more than the statements themselves.
        conn = self.connection()
        with conn.begin():
            if (
                self.pipelines
                and data["kind"] != "letter"  # no daily-cap slot to take first
                and not isinstance(payload, Exception)
                and (self.pending is None or self.pending_plain)
            ):
                now = self.clock()
                if not self._start_together(conn, message_id):
                    return "skipped", "no longer claimed by this worker"
                slot = None
            else:
                started = self._start(conn, data, payload)
                if isinstance(started[0], str):
                    return started  # type: ignore[return-value]
                now, slot = started  # type: ignore[assignment]
        letter = data["letter"]
        wave, renderer = self.renderers[letter["wave_id"]]
        settings = self.settings
        # A letter that does not go gives its slot back, in the transaction that records why.
        release = slot[:2] if slot is not None else None
        if self.suppressed and address_of(data["to_addr"]).lower() in self.suppressed:
            # Suppressed while the message waited (staff accepted a complaint in between).
            reason = (
                SUPPRESSED_RECIPIENT
                if data["kind"] == "letter"
                else "the address asked for no more campaign mail"
            )
            self._later(
                message_id,
                "suppressed",
                reason,
                letter_id=letter["id"] if data["kind"] == "letter" else None,
                release=release,
            )
            return "skipped", "suppressed"
        mail_from = self.domain_from
        if settings.bounce_domain:
            # VERP: a bounce comes back to an address that names this very message.
            mail_from = f"bounces+{verp_tag(data['message_id'])}@{settings.bounce_domain}"
        recipients = [address_of(data["to_addr"])]
        if data.get("cc_addr"):
            recipients.append(address_of(data["cc_addr"]))
        name = f"{message_id:08d}-{data['kind']}-{letter['reference']}"
        try:
            delivered = self.transport.send(payload, mail_from, recipients, name)
        except DeliveryError as exc:
            if exc.fatal:
                # The relay refused us, not this message: give it back untouched.
                self._later(message_id, "queued", str(exc), attempts_delta=-1, release=release)
                return "fatal", str(exc)
            if exc.temporary and data["attempts"] + 1 < MAX_ATTEMPTS:
                self._later(
                    message_id,
                    "queued",
                    str(exc),
                    retry_at=now + FIRST_RETRY * 2 ** data["attempts"],
                    release=release,
                )
                return "retrying", str(exc)
            self._later(
                message_id,
                "failed",
                str(exc),
                letter_id=letter["id"] if data["kind"] == "letter" else None,
                release=release,
            )
            return "failed", str(exc)

        def record(conn: Any) -> None:
            self.sent.execute(conn, mid=message_id, now=now, response=delivered.response)
            if data["kind"] in INVITATIONS:
                mark_invited(conn, letter["id"])
            elif data["kind"] == "letter" and mark_sent(conn, letter["id"]) and not data.get("cc_addr"):
                # A letter copied to its member (a wave launched before receipts carried the
                # letter) is their one message about it; any other gets its receipt.
                queue_receipt(conn, letter, renderer, wave, settings, now)

        self.pending = record
        # Nothing in it reads a statement's result, unless a letter's receipt depends on one.
        self.pending_plain = data["kind"] != "letter"
        return "sent", delivered.response

    def _start(
        self, conn: Any, data: dict[str, Any], payload: bytes | Exception
    ) -> tuple[str, str] | tuple[datetime, tuple[str, date, int] | None]:
        """Record the last message's outcome and mark this one `sending` (taking its daily-cap
        slot), in the caller's transaction: (now, slot), or the outcome when it does not go."""
        message_id = data["id"]
        if self.pending is not None:
            self.pending(conn)
            self.pending = None
        if isinstance(payload, Exception):
            # Straight from claimed to failed, committed now: it never reaches the relay,
            # so it is never in doubt, and no later run tries it again.
            problem = f"cannot build the message: {build_problem(payload)}"
            if not set_aside(conn, message_id, problem, claimed_by=self.worker):
                return "skipped", "no longer claimed by this worker"
            return "unbuildable", problem
        now = self.clock()
        slot = self._slot(data, now)
        if slot is not None and not self.daily_cap.reserve(conn, *slot):
            retry_at = next_day_start(slot[1])
            if not self.hold.execute(conn, mid=message_id, worker=self.worker, retry_at=retry_at):
                return "skipped", "no longer claimed by this worker"
            return (
                "held",
                f"{slot[2]} letter(s) to this target today: waits until {retry_at:%d %b %H:%M} UTC",
            )
        # Committed before the SMTP transaction starts: if this process dies
        # from here on, the message is known to be in doubt (and keeps its slot).
        if not self.start.execute(conn, mid=message_id, worker=self.worker):
            if slot is not None:
                self.daily_cap.release(conn, slot[0], slot[1])
            return "skipped", "no longer claimed by this worker"
        return now, slot

    def _start_together(self, conn: Any, message_id: int) -> bool:
        """_start for the common case on PostgreSQL: the last message's record (statements
        whose results nothing reads) and this one's start go to the server in one round trip
        (a psycopg pipeline) instead of one each. False if the message is no longer ours."""
        with conn.connection.dbapi_connection.pipeline():
            if self.pending is not None:
                self.pending(conn)
                self.pending = None
            started = self.start.cursor(conn, mid=message_id, worker=self.worker)
        try:
            return bool(started.rowcount)  # known once the pipeline has synced
        finally:
            started.close()

    def _later(
        self,
        message_id: int,
        status: str,
        error: str,
        *,
        retry_at: datetime | None = None,
        attempts_delta: int = 0,
        letter_id: int | None = None,
        release: tuple[str, date] | None = None,
    ) -> None:
        """Record how a message ended; `letter_id` (a member's letter that will never go) is then
        marked failed with the same reason, not left queued; `release` is the daily-cap slot
        (address, day) the message took and gives back."""

        def record(conn: Any) -> None:
            self.finish.execute(
                conn,
                mid=message_id,
                status=status,
                error=error,
                retry_at=retry_at,
                attempts_delta=attempts_delta,
            )
            if letter_id is not None:
                mark_undelivered(conn, letter_id, error)
            if release is not None:
                self.daily_cap.release(conn, *release)

        self.pending = record
        self.pending_plain = False

    def _slot(self, data: dict[str, Any], now: datetime) -> tuple[str, date, int] | None:
        """(target address, London day, cap) when this message counts against a daily cap."""
        if data["kind"] != "letter":
            return None  # invitations, receipts and questionnaires go to members
        cap = effective_daily_cap({"daily_cap": self.caps[data["letter"]["wave_id"]]}, self.settings)
        if not cap:
            return None
        return address_of(data["to_addr"]).lower(), london_day(now), cap


def address_of(value: str) -> str:
    """The address in a stored recipient ("Name <addr>" as formataddr wrote it, or a bare address).

    formataddr quotes any name with specials, so the last "<" opens the address; parseaddr
    would work it out the long way, once per message.
    """
    if value.endswith(">"):
        return value[value.rindex("<") + 1 : -1]
    return parseaddr(value)[1]


def queue_receipt(
    conn: Any,
    letter: dict[str, Any],
    renderer: WaveRenderer,
    wave: dict[str, Any],
    settings: Settings,
    now: datetime,
) -> None:
    """Queue the member's receipt, in the transaction that records their letter as sent.

    It is the member's one message about the sent letter: the letter carries no copy to them,
    and the receipt carries its text exactly as it went (outbox.build_receipt)."""
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
            message_id=new_message_id(letter["reference"], "receipt", domain),
            status="queued",
            attempts=0,
            created_at=now,
        )
    )
