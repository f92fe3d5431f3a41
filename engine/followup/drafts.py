"""Letters drafted after launch: the follow-up when a target replies, the chaser when it does not.

Each is a letter of its own (reference, link, states) for the same member,
wave and target, merged from the wave's frozen follow-up or chaser template,
and the member is invited to confirm it on the same page as their first
letter, through the same link. The emails sent after launch (those invitations, and the MP
questionnaire) are queued here too, never to an address that asked for no
more campaign mail.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr
from typing import Any

from sqlalchemy import Connection, select

from engine.letters.launch import letter_date
from engine.letters.links import link_token, new_link_nonce, new_message_id, new_reference, token_hash
from engine.letters.render import WaveRenderer, freeze_later
from engine.mail.outbox import email_context, later_context
from engine.settings import Settings
from engine.store.models import inbound_table, letter_table, outbox_table, wave_table
from engine.store.suppression import may_email

# The invitation that goes with each kind of letter drafted after launch.
INVITATION_KIND = {"follow_up": "follow_up_invitation", "chaser": "chaser_invitation"}
# How much of a reply a follow-up may quote.
_EXCERPT_CHARS = 300
# Replies that promise an answer or only confirm receipt: the target has not answered yet, so
# they draft no follow-up and restart the reply clock instead (a chaser comes if nothing follows).
NOT_YET_ANSWERED = ("holding", "acknowledgement")


def load_wave(conn: Connection, wave_id: int, settings: Settings) -> dict[str, Any]:
    """A launched wave with its after-launch templates frozen (on first use, for older waves)."""
    wave = dict(conn.execute(select(wave_table).where(wave_table.c.id == wave_id)).one()._mapping)
    frozen = wave["frozen"]
    if "later_emails" not in frozen:
        frozen = {**frozen, **freeze_later(wave, settings)}
        conn.execute(wave_table.update().where(wave_table.c.id == wave_id).values(frozen=frozen))
        wave["frozen"] = frozen
    return wave


_renderers: dict[str, WaveRenderer] = {}


def renderer_for(wave: dict[str, Any]) -> WaveRenderer:
    """The wave's compiled templates, compiled once per process for the same frozen sources
    (hashing them costs far less than compiling them for every reply)."""
    key = hashlib.sha256(json.dumps(wave["frozen"], sort_keys=True).encode()).hexdigest()
    if key not in _renderers:
        if len(_renderers) > 32:
            _renderers.clear()
        _renderers[key] = WaveRenderer(wave["frozen"])
    return _renderers[key]


def _unique_reference(conn: Connection) -> str:
    while True:
        reference = new_reference()
        taken = conn.execute(select(letter_table.c.id).where(letter_table.c.reference == reference)).first()
        if taken is None:
            return reference


def queue_email(
    conn: Connection,
    letter: dict[str, Any],
    wave: dict[str, Any],
    kind: str,
    settings: Settings,
    now: datetime,
    *,
    renderer: WaveRenderer | None = None,
) -> bool:
    """Queue one union-to-member email about `letter`: an invitation, a questionnaire or its reminder."""
    renderer = renderer or renderer_for(wave)
    context = email_context(letter, wave, settings)
    context.update(later_context(kind, letter, settings))
    member = context["member"]
    to_addr = formataddr((member["name"], member["email"]))
    if not member["email"] or not may_email(conn, letter["member_id"], to_addr):
        return False
    subject, _, _ = renderer.later_email(kind, context)
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    message_id = new_message_id(letter["reference"], kind, domain)
    o = outbox_table.c
    exists = conn.execute(select(o.id).where(o.letter_id == letter["id"], o.kind == kind)).first()
    if exists:
        return False
    conn.execute(
        outbox_table.insert().values(
            letter_id=letter["id"],
            kind=kind,
            to_addr=to_addr,
            subject=subject,
            message_id=message_id,
            status="queued",
            attempts=0,
            created_at=now,
        )
    )
    return True


def draft_letter(
    conn: Connection,
    wave: dict[str, Any],
    original: dict[str, Any],
    kind: str,
    settings: Settings,
    now: datetime,
    reply: dict[str, Any] | None = None,
    *,
    renderer: WaveRenderer | None = None,
) -> dict[str, Any] | None:
    """Draft a follow-up or chaser to `original`'s target and queue its invitation; None if one exists."""
    lt = letter_table.c
    already = conn.execute(
        select(lt.id).where(lt.wave_id == wave["id"], lt.member_id == original["member_id"], lt.kind == kind)
    ).first()
    if already is not None:
        return None
    renderer = renderer or renderer_for(wave)
    reference = _unique_reference(conn)
    nonce = new_link_nonce()
    token = link_token(settings.require_secret(), nonce)
    date = letter_date(now)
    draft = {
        **{k: original[k] for k in ("wave_id", "member_id", "target_kind", "target_key", "target_name")},
        **{k: original[k] for k in ("target_email", "target_salutation", "target_address")},
        "reference": reference,
        "kind": kind,
        "parent_id": original["id"],
        "state": "drafted",
        # One member, one link per wave: the follow-up's invitation carries the first letter's
        # link (made from its nonce), which opens every letter the member has in the wave.
        "merge_snapshot": {
            **original["merge_snapshot"],
            "date": date,
            "page_nonce": original["merge_snapshot"].get("page_nonce") or original["link_nonce"],
        },
        "link_nonce": nonce,
        "token_hash": token_hash(token),
        "token_expires_at": now + timedelta(days=wave["link_days"]),
        "created_at": now,
        "updated_at": now,
        "subject": "",
        "body_text": "",
        "sender_address": original.get("sender_address"),
    }
    context = email_context(draft, wave, settings)
    context["reply"] = reply or {"author": "", "date": "", "excerpt": "", "text": "", "outcome": ""}
    draft["subject"], draft["body_text"] = renderer.later_letter(kind, context)
    draft["id"] = conn.execute(letter_table.insert().values(**draft)).inserted_primary_key[0]
    queue_email(conn, draft, wave, INVITATION_KIND[kind], settings, now, renderer=renderer)
    return draft


def reply_outcome(row: Any) -> str:
    """What a reply means: the staff's outcome where they coded one, else the engine's suggestion."""
    return row["outcome"] or row["suggested_outcome"] or ""


def answers_letter(conn: Connection, inbound_id: int) -> bool:
    """Whether a reply answers its letter, or only holds it (a holding reply, an acknowledgement)."""
    i = inbound_table.c
    row = conn.execute(select(i.outcome, i.suggested_outcome).where(i.id == inbound_id)).one()._mapping
    return reply_outcome(row) not in NOT_YET_ANSWERED


def reply_context(conn: Connection, inbound_id: int, original: dict[str, Any]) -> dict[str, Any]:
    """A reply as a follow-up template may quote it: who, when, its opening words, and its outcome
    (which picks the template's wording for a supportive reply or for a refusal or non-answer)."""
    row = conn.execute(select(inbound_table).where(inbound_table.c.id == inbound_id)).one()._mapping
    text = (row["text"] or "").strip()
    return {
        "author": row["author_name"] or original["target_name"],
        "date": letter_date(row["authored_at"] or row["received_at"]),
        "excerpt": excerpt(text),
        "text": text,
        "outcome": reply_outcome(row),
    }


def excerpt(text: str) -> str:
    """The reply's first paragraph after the greeting, cut at a sentence near _EXCERPT_CHARS."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    body = [p for p in paragraphs if not p.lower().startswith(("dear ", "hello", "hi ", "good morning"))]
    if not body:
        return ""
    first = body[0]
    if len(first) <= _EXCERPT_CHARS:
        return first
    cut = first.rfind(". ", 0, _EXCERPT_CHARS)
    return first[: cut + 1] if cut > 40 else first[:_EXCERPT_CHARS].rsplit(" ", 1)[0] + "…"


def draft_follow_up(
    conn: Connection, letter: dict[str, Any], inbound_id: int, settings: Settings, now: datetime
) -> bool:
    """When an employer answers a member's letter (or its chaser), draft the wave's follow-up;
    a holding reply or an acknowledgement drafts nothing (see NOT_YET_ANSWERED)."""
    if letter["kind"] == "follow_up" or letter["target_kind"] != "employer":
        return False
    if not answers_letter(conn, inbound_id):
        return False
    original = letter
    if letter["kind"] == "chaser" and letter.get("parent_id"):
        original = dict(
            conn.execute(select(letter_table).where(letter_table.c.id == letter["parent_id"])).one()._mapping
        )
    wave = load_wave(conn, original["wave_id"], settings)
    if "follow_up" not in (wave["frozen"].get("later_letters") or {}):
        return False
    reply = reply_context(conn, inbound_id, original)
    return draft_letter(conn, wave, original, "follow_up", settings, now, reply) is not None
