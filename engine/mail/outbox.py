"""The outbox: queued messages, built into RFC 5322 emails from the wave's frozen templates.

Launch stores only what varies per message (recipient, subject, Message-ID,
and the letter it belongs to); the body is rendered when the message is
built, from the same frozen templates and frozen merge, so a message built
twice is the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select

from engine.errors import CampaignError, failure_text
from engine.letters.attachments import carries_attachments, wave_attachments
from engine.letters.documents import letter_document
from engine.letters.launch import letter_date
from engine.letters.links import answer_link, letter_link, link_token, unsubscribe_link
from engine.letters.merge import letter_words, member_from_snapshot, sharing_context, wave_context
from engine.letters.render import WaveRenderer
from engine.mail.mime import alternative, attachment_part
from engine.members.validation import header_problem
from engine.settings import Settings
from engine.store.files import make_folder, write_atomically
from engine.store.models import letter_table, outbox_table, utcnow, wave_table
from engine.store.states import mark_undelivered


@dataclass
class BuiltMessage:
    outbox_id: int
    kind: str
    reference: str | None
    data: bytes
    to: str
    problem: str | None = None  # why it could not be built (then `data` is empty)


def email_context(letter: dict[str, Any], wave: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """What an email template sees for one letter, rebuilt from the letter's frozen merge."""
    reference, nonce = letter["reference"], letter["link_nonce"]
    secret = settings.require_secret()
    snapshot = letter["merge_snapshot"]
    member = member_from_snapshot(snapshot["member"], wave["frozen"].get("custom_fields") or ())
    return {
        "member": member,
        "target": {
            "kind": letter["target_kind"],
            "name": letter["target_name"],
            "email": letter["target_email"],
            "salutation": letter["target_salutation"],
            "address": letter["target_address"],
            "constituency": member["constituency"] if letter["target_kind"] == "mp" else None,
            "party": None,
        },
        "wave": wave_context(wave),
        "letter": {
            "reference": reference,
            "date": snapshot["date"],
            **sharing_context(snapshot),
            "subject": letter["subject"],
            "text": letter["body_text"],
            # What went to the target, for the member's receipt: set once the letter has gone.
            "sent_subject": None,
            "sent_text": None,
            "sent_on": None,
            "sent_attachments": [],
        },
        # A follow-up or chaser is reached through the member's one link for the wave.
        "link": letter_link(settings.base_url, link_token(secret, snapshot.get("page_nonce") or nonce)),
        "unsubscribe_link": unsubscribe_link(settings.base_url, secret, reference, nonce),
        "campaign": settings.campaign_context(),
    }


def later_context(kind: str, letter: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """What an after-launch email template sees besides the usual fields: the answer links."""
    if kind not in ("questionnaire", "questionnaire_reminder"):
        return {}
    secret = settings.require_secret()
    return {
        "answers": {
            answer: answer_link(settings.base_url, secret, letter["reference"], letter["link_nonce"], answer)
            for answer in ("yes", "not_yet", "no")
        },
        "reminder": kind == "questionnaire_reminder",
    }


def _union_headers(
    outbox: dict[str, Any],
    letter: dict[str, Any],
    settings: Settings,
    context: dict[str, Any],
    date: datetime,
) -> list[tuple[str, str]]:
    return [
        ("From", settings.mail_from),
        ("To", outbox["to_addr"]),
        ("Reply-To", settings.organising_email),
        ("Subject", outbox["subject"]),
        ("Date", format_datetime(date)),
        ("Message-ID", outbox["message_id"]),
        # Union-to-member mail: one-click unsubscribe (RFC 8058).
        ("List-Unsubscribe", f"<{context['unsubscribe_link']}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("X-Campaign-Ref", letter["reference"]),
    ]


def _union_mail_builder(
    render: Callable[[WaveRenderer, dict[str, Any], str], tuple[str, str]],
    prepare: Callable[[dict[str, Any], dict[str, Any], dict[str, Any], Settings], None] | None = None,
) -> Callable[..., bytes]:
    """A builder for union-to-member mail whose two parts `render` makes from the frozen templates,
    after `prepare` adds what that kind of email needs to the context."""

    def build(
        outbox: dict[str, Any],
        letter: dict[str, Any],
        wave: dict[str, Any],
        renderer: WaveRenderer,
        settings: Settings,
        date: datetime | None = None,
    ) -> bytes:
        context = email_context(letter, wave, settings)
        context.update(later_context(outbox["kind"], letter, settings))
        if prepare is not None:
            prepare(context, letter, wave, settings)
        text, html = render(renderer, context, outbox["kind"])
        headers = _union_headers(outbox, letter, settings, context, date or outbox["created_at"])
        return alternative(headers, text, html)

    return build


build_invitation = _union_mail_builder(lambda renderer, context, kind: renderer.invitation(context))
# Emails queued after launch: follow-up and chaser invitations, the MP questionnaire.
build_later = _union_mail_builder(lambda renderer, context, kind: renderer.later_email(kind, context)[1:])
# The member's one message about their sent letter: its text exactly as it went, with its
# subject, reference and date (the letter itself carries no copy to them).
build_receipt = _union_mail_builder(
    lambda renderer, context, kind: renderer.receipt(context)[1:],
    lambda context, letter, wave, settings: context["letter"].update(receipt_fields(letter, wave, settings)),
)


def receipt_fields(letter: dict[str, Any], wave: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """letter.sent_subject, sent_text, sent_on and sent_attachments: the letter as its target
    received it. The receipt names the attached files; it does not carry them again."""
    sent_at = letter.get("sent_at")
    attachments = (wave.get("attachments") or []) if carries_attachments(letter) else []
    return {
        "sent_subject": letter_subject(letter),
        "sent_text": text_as_sent(letter, settings),
        "sent_on": letter_date(sent_at) if sent_at else None,
        "sent_attachments": [attachment.describe() for attachment in attachments],
    }


def letter_subject(letter: dict[str, Any]) -> str:
    """The subject a member's letter goes out with: its own, and its reference for replies."""
    return f"{letter['subject']} [Ref: {letter['reference']}]"


def text_as_sent(letter: dict[str, Any], settings: Settings) -> str:
    """The plain text of a member's letter exactly as its target receives it, footer and all."""
    member = member_from_snapshot(letter["merge_snapshot"]["member"])
    text = letter_words(letter)
    address = letter.get("sender_address") or member["address"]
    footer = f"\n--\nSent by {member['name']}"
    footer += f", {', '.join(address.splitlines())}" if address else ""
    footer += f", through {settings.campaign_name}. Reference: {letter['reference']}\n"
    return text.rstrip("\n") + "\n" + footer


def build_letter(
    outbox: dict[str, Any],
    letter: dict[str, Any],
    wave: dict[str, Any],
    renderer: WaveRenderer,
    settings: Settings,
    date: datetime | None = None,
) -> bytes:
    """The member's own letter to its target: from the campaign address on the member's behalf.

    Sending as the member's own address would fail DMARC, so it comes from the
    campaign ("Jane Smith via …"), with Reply-To the member. The member's copy is
    their receipt (build_receipt), which carries this text exactly; only a wave
    whose frozen receipt does not carry the letter (launched before receipts did,
    or with an organiser's own receipt) copies the letter to them instead.
    It carries no List-Unsubscribe: it is one person's letter, not bulk mail.
    """
    member = member_from_snapshot(letter["merge_snapshot"]["member"])
    headers = [
        (
            "From",
            formataddr((f"{member['name']} via {settings.campaign_name}", parseaddr(settings.mail_from)[1])),
        ),
        ("To", outbox["to_addr"]),
    ]
    if outbox.get("cc_addr"):
        headers.append(("Cc", outbox["cc_addr"]))
    headers += [
        ("Reply-To", formataddr((member["name"], member["email"]))),
        ("Subject", outbox["subject"]),
        ("Date", format_datetime(date or outbox["created_at"])),
        ("Message-ID", outbox["message_id"]),
        ("X-Campaign-Ref", letter["reference"]),
    ]
    parts = (wave.get("attachment_parts") or ()) if carries_attachments(letter) else ()
    return alternative(headers, text_as_sent(letter, settings), letter_document(letter, renderer), parts)


def load_wave(conn: Connection, wave_id: int) -> tuple[dict[str, Any], WaveRenderer]:
    """A wave as its mail is built: the row, its attachments with their MIME parts built once
    (every letter of the wave reuses the same bytes), and the renderer of its frozen templates."""
    wave = dict(conn.execute(select(wave_table).where(wave_table.c.id == wave_id)).one()._mapping)
    wave["attachments"] = wave_attachments(conn, wave_id)
    wave["attachment_parts"] = [
        attachment_part(a.filename, a.media_type, a.data) for a in wave["attachments"]
    ]
    return wave, WaveRenderer(wave["frozen"])


BUILDERS = {
    "invitation": build_invitation,
    "receipt": build_receipt,
    "letter": build_letter,
    "follow_up_invitation": build_later,
    "chaser_invitation": build_later,
    "questionnaire": build_later,
    "questionnaire_reminder": build_later,
}
# Outbox kinds that invite a member to confirm a letter: sending one moves the letter to `invited`.
INVITATIONS = ("invitation", "follow_up_invitation", "chaser_invitation")


def build_message(
    outbox: dict[str, Any],
    letter: dict[str, Any],
    wave: dict[str, Any],
    renderer: WaveRenderer,
    settings: Settings,
    date: datetime | None = None,
) -> bytes:
    """The complete RFC 5322 message for an outbox row, as bytes with CRLF line ends."""
    builder = BUILDERS.get(outbox["kind"])
    if builder is None:
        raise CampaignError(f"outbox message {outbox['id']}: unknown kind {outbox['kind']!r}")
    return builder(outbox, letter, wave, renderer, settings, date)


def build_problem(exc: Exception) -> str:
    """Why a message could not be built, in words for staff (ours say it; others are named)."""
    if isinstance(exc, CampaignError | ValueError):
        return str(exc)
    return failure_text(exc)


def check_sender(settings: Settings) -> None:
    """Refuse to build any mail when a setting every message's headers carry could not go in one.

    Otherwise every message would be set aside as failed, one by one, for the same reason.
    """
    for name, value in (
        ("CAMPAIGN_FROM", settings.mail_from),
        ("CAMPAIGN_ORGANISING_EMAIL", settings.organising_email),
        ("CAMPAIGN_NAME", settings.campaign_name),
    ):
        problem = header_problem(value)
        if problem is not None:
            raise CampaignError(f"{name}: contains {problem}: no mail can carry it; nothing was sent")


def set_aside(conn: Connection, outbox_id: int, problem: str, *, claimed_by: str | None = None) -> bool:
    """queued (or claimed by `claimed_by`) → failed, for a message that cannot be built.

    It is never sent and never tried again; the rest of the queue goes on without it.
    False when the message has moved on (another worker claimed or sent it).
    """
    o = outbox_table.c
    if claimed_by is None:
        condition = o.status == "queued"
    else:
        condition = and_(o.status == "claimed", o.claimed_by == claimed_by)
    done = conn.execute(
        outbox_table.update()
        .where(o.id == outbox_id, condition)
        .values(status="failed", error=problem, claimed_by=None, claimed_at=None, next_attempt_at=None)
    ).rowcount
    if done:
        letter_id = conn.execute(select(o.letter_id).where(o.id == outbox_id, o.kind == "letter")).scalar()
        if letter_id is not None:
            mark_undelivered(conn, letter_id, problem)
    return bool(done)


def parse_message(data: bytes) -> EmailMessage:
    """A built message read back with the standard library, for previews and checks."""
    return message_from_bytes(data, policy=default)  # type: ignore[return-value]


def queued_messages(engine: Engine, settings: Settings, *, status: str = "queued") -> Iterator[BuiltMessage]:
    """Build every outbox message in `status`, oldest first, streaming.

    A message that cannot be built comes with its `problem` instead of its bytes.
    """
    o, lt = outbox_table.c, letter_table.c
    renderers: dict[int, tuple[dict[str, Any], WaveRenderer]] = {}
    last_id = 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(
                select(
                    outbox_table, letter_table.c.wave_id, *[c.label(f"l_{c.name}") for c in letter_table.c]
                )
                .select_from(outbox_table.join(letter_table, lt.id == o.letter_id))
                .where(o.status == status, o.id > last_id)
                .order_by(o.id)
                .limit(500)
            ).all()
            if not rows:
                return
            for row in rows:
                data = dict(row._mapping)
                last_id = data["id"]
                if data["wave_id"] not in renderers:
                    renderers[data["wave_id"]] = load_wave(conn, data["wave_id"])
                wave, renderer = renderers[data["wave_id"]]
                letter = {k[2:]: v for k, v in data.items() if k.startswith("l_")}
                built = BuiltMessage(data["id"], data["kind"], letter["reference"], b"", data["to_addr"])
                try:
                    built.data = build_message(data, letter, wave, renderer, settings)
                except Exception as exc:  # whatever the cause, one message must not stop the rest
                    built.problem = build_problem(exc)
                yield built


@dataclass
class OutboxExport:
    directory: str
    written: int = 0
    failed: list[str] = field(default_factory=list)  # "message ID: why", set aside as failed


def export_outbox(
    engine: Engine,
    directory: str | Path,
    settings: Settings,
    *,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> OutboxExport:
    """Write every queued message as DIR/<id>-<kind>-<ref>.eml.

    A message that cannot be built is set aside as failed, with why, and the rest are written.
    `on_start` hears how many messages there are; `progress` hears of each one done.
    """
    check_sender(settings)
    directory = make_folder(directory)
    result = OutboxExport(str(directory))
    if on_start is not None:
        on_start(count_queued(engine))
    for built in queued_messages(engine, settings):
        if built.problem is not None:
            problem = f"cannot build the message: {built.problem}"
            with engine.begin() as conn:
                if set_aside(conn, built.outbox_id, problem):
                    result.failed.append(f"message {built.outbox_id}: {problem}")
        else:
            name = f"{built.outbox_id:08d}-{built.kind}-{built.reference}.eml"
            write_atomically(directory / name, built.data)
            result.written += 1
        if progress is not None:
            progress(1)
    return result


def count_queued(engine: Engine, *, due_only: bool = False) -> int:
    """Messages waiting in the outbox; with `due_only`, those a worker would send now
    (not those waiting to retry later): a progress bar's total."""
    o = outbox_table.c
    stmt = select(func.count()).select_from(outbox_table).where(o.status == "queued")
    if due_only:
        stmt = stmt.where(or_(o.next_attempt_at.is_(None), o.next_attempt_at <= utcnow()))
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one()
