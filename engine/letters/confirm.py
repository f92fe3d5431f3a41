"""What a member does with their letter: send it through us, send it themselves, or opt out.

The member pages and the demo both go through these functions. Every choice
is one guarded state change, so a double click or a replayed form changes
nothing the second time.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from email.utils import formataddr, parseaddr
from typing import Any

from sqlalchemy import Engine, func, select

from engine.errors import CampaignError
from engine.letters.links import new_message_id, token_hash
from engine.letters.merge import member_from_snapshot, unfilled_prompts
from engine.settings import Settings
from engine.store.events import record_event
from engine.store.models import letter_table, member_table, outbox_table, utcnow, wave_table
from engine.store.states import mark_opted_out, mark_queued, mark_self_sent
from engine.store.suppression import is_suppressed

MAX_TEXT = 12_000
MAX_ADDRESS = 400
_COMPARE_WITH = 20


@dataclass
class MemberLetter:
    letter: dict[str, Any]
    wave: dict[str, Any]
    # The recipient's address asked for no more campaign mail (a staff decision on a complaint).
    target_suppressed: bool = False

    @property
    def text(self) -> str:
        return self.letter["final_text"] or self.letter["body_text"]

    @property
    def member(self) -> dict[str, Any]:
        return member_from_snapshot(self.letter["merge_snapshot"]["member"])

    @property
    def undecided(self) -> bool:
        return self.letter["state"] in ("drafted", "invited")

    @property
    def needs_address(self) -> bool:
        # MPs act for their own constituents: they need the member's home address.
        return self.letter["target_kind"] == "mp"

    @property
    def can_send_for_member(self) -> bool:
        return bool(self.letter["target_email"]) and not self.target_suppressed

    def expired(self) -> bool:
        return utcnow() > self.letter["token_expires_at"]

    @property
    def actionable(self) -> bool:
        return self.undecided and not self.expired()

    @property
    def unfilled(self) -> list[str]:
        """The template's prompts the member has not yet replaced with their own words."""
        return unfilled_prompts(self.text, self.letter["body_text"])


@dataclass
class MemberWave:
    """What one member's link opens: all their letters in one wave (the first letter, and
    any follow-up or chaser drafted later), oldest first. Any of their letters' links opens it."""

    opened: MemberLetter  # the letter whose link was used: its nonce makes the form token
    letters: list[MemberLetter]

    @property
    def wave(self) -> dict[str, Any]:
        return self.opened.wave

    @property
    def current(self) -> MemberLetter | None:
        """The letter waiting for the member's choice, if any: the newest undecided one."""
        waiting = [found for found in self.letters if found.undecided]
        return waiting[-1] if waiting else None

    @property
    def closed(self) -> bool:
        """Nothing to show: every letter still waited for the member when its link ran out."""
        return all(found.undecided and found.expired() for found in self.letters)

    def letter(self, reference: str) -> MemberLetter | None:
        """One of this member's letters in this wave, by the reference a form names."""
        return next((found for found in self.letters if found.letter["reference"] == reference), None)


def wave_for_token(engine: Engine, token: str) -> MemberWave | None:
    """What a personal link opens, or None for a wrong token. An expired link still opens
    (`closed` says so): the page explains it and offers a new one."""
    if not token or len(token) > 64:
        return None
    lt = letter_table.c
    with engine.connect() as conn:
        row = conn.execute(select(letter_table).where(lt.token_hash == token_hash(token))).first()
        if row is None:
            return None
        wave = dict(conn.execute(select(wave_table).where(wave_table.c.id == row.wave_id)).one()._mapping)
        rows = conn.execute(
            select(letter_table)
            .where(lt.wave_id == row.wave_id, lt.member_id == row.member_id)
            .order_by(lt.id)
        ).all()
        suppressed: dict[str | None, bool] = {}
        letters = []
        for each in rows:
            letter = dict(each._mapping)
            email = letter["target_email"]
            if email not in suppressed:
                suppressed[email] = is_suppressed(conn, email)
            letters.append(MemberLetter(letter, wave, suppressed[email]))
    opened = next(found for found in letters if found.letter["id"] == row.id)
    return MemberWave(opened, letters)


def letter_for_token(engine: Engine, token: str) -> MemberLetter | None:
    """The letter a link was made for, or None (wrong token, or expired before the member acted)."""
    page = wave_for_token(engine, token)
    if page is None or (page.opened.undecided and page.opened.expired()):
        return None
    return page.opened


def letter_for_member(
    engine: Engine, wave_name: str, membership_no: str, kind: str = "letter"
) -> MemberLetter:
    """A member's letter (or follow-up, or chaser) in a wave, for staff acting on their behalf."""
    lt, w, m = letter_table.c, wave_table.c, member_table.c
    with engine.connect() as conn:
        row = conn.execute(
            select(letter_table)
            .join(wave_table, w.id == lt.wave_id)
            .join(member_table, m.id == lt.member_id)
            .where(w.name == wave_name, m.membership_no == membership_no, lt.kind == kind)
        ).first()
        if row is None:
            what = "letter" if kind == "letter" else kind.replace("_", "-")
            raise CampaignError(f"member {membership_no} has no {what} in wave {wave_name!r}")
        letter = dict(row._mapping)
        wave = dict(conn.execute(select(wave_table).where(w.id == letter["wave_id"])).one()._mapping)
        return MemberLetter(letter, wave, is_suppressed(conn, letter["target_email"]))


# Pasted text can carry NULs and other control characters: PostgreSQL refuses NUL, and none of
# them belongs in a letter. Tabs and line breaks stay.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_text(text: str) -> str:
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not text:
        raise CampaignError("the letter is empty: write something, or choose 'Not for me'")
    if len(text) > MAX_TEXT:
        raise CampaignError(f"the letter is too long: {len(text):,} characters, at most {MAX_TEXT:,}")
    return text + "\n"


def _clean_address(address: str | None, required: bool) -> str | None:
    address = _CONTROL.sub("", (address or "").replace("\r", "\n"))
    lines = [line.strip() for line in address.split("\n") if line.strip()]
    joined = "\n".join(lines)
    if required and not joined:
        raise CampaignError("your home address is needed: MPs reply to their own constituents")
    if len(joined) > MAX_ADDRESS:
        raise CampaignError(f"the address is too long: at most {MAX_ADDRESS} characters")
    return joined or None


def check_send(found: MemberLetter, text: str, address: str | None) -> tuple[str, str | None]:
    """(the letter's text, the member's address) as "Send it for me" would send them, or the
    CampaignError saying why it cannot go."""
    letter = found.letter
    if found.target_suppressed:
        raise CampaignError(
            f"{letter['target_name']} has asked not to receive email sent through the campaign: "
            "please send it yourself"
        )
    if not found.can_send_for_member:
        raise CampaignError(
            f"{letter['target_name']} has no email address on record: please send it yourself"
        )
    return _clean_text(text), _clean_address(address, found.needs_address)


def send_for_me(
    engine: Engine, settings: Settings, found: MemberLetter, text: str, address: str | None
) -> bool:
    """Queue the letter to its target (a copy to the member); False if it was already decided."""
    letter = found.letter
    final, sender_address = check_send(found, text, address)
    member = found.member
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    with engine.begin() as conn:
        # The edit cannot change the recipient: the target comes from the frozen letter.
        if not mark_queued(
            conn, letter["id"], None if final == letter["body_text"] else final, sender_address
        ):
            return False
        conn.execute(
            outbox_table.insert().values(
                letter_id=letter["id"],
                kind="letter",
                to_addr=formataddr((letter["target_name"], letter["target_email"])),
                cc_addr=None
                if found.wave["frozen"].get("receipt_carries_letter")
                else formataddr((member["name"], member["email"])),
                subject=f"{letter['subject']} [Ref: {letter['reference']}]",
                message_id=new_message_id(letter["reference"], "letter", domain),
                status="queued",
                attempts=0,
                created_at=utcnow(),
            )
        )
        record_event(
            conn, "letter.queued", reference=letter["reference"], edited=final != letter["body_text"]
        )
    return True


def sent_myself(engine: Engine, found: MemberLetter, text: str | None) -> bool:
    final = _clean_text(text) if text is not None else None
    with engine.begin() as conn:
        done = mark_self_sent(
            conn, found.letter["id"], None if final in (None, found.letter["body_text"]) else final
        )
        if done:
            record_event(conn, "letter.self_sent", reference=found.letter["reference"])
    return done


def not_for_me(engine: Engine, found: MemberLetter) -> bool:
    with engine.begin() as conn:
        done = mark_opted_out(conn, found.letter["id"])
        if done:
            record_event(conn, "letter.opted_out", reference=found.letter["reference"])
    return done


def save_draft(engine: Engine, found: MemberLetter, text: str, address: str | None = None) -> bool:
    """Keep the member's edits to a letter they have not decided on yet, so the PDF, the email
    link and their next visit all use them; False if the letter was decided meanwhile."""
    final = _clean_text(text)
    values: dict[str, Any] = {"final_text": None if final == found.letter["body_text"] else final}
    if address is not None:
        values["sender_address"] = _clean_address(address, False)
    lt = letter_table.c
    with engine.begin() as conn:
        saved = conn.execute(
            letter_table.update()
            .where(lt.id == found.letter["id"], lt.state.in_(("drafted", "invited")))
            .values(**values, updated_at=utcnow())
        ).rowcount
    if saved:
        found.letter.update(values)
    return bool(saved)


def similarity(engine: Engine, found: MemberLetter, text: str) -> tuple[int, int]:
    """(percent the same, how many letters) against others to the same target in this wave.

    MPs and employers discount identical circulars; the page shows this to
    encourage a personal touch, never to block.
    """
    lt = letter_table.c
    letter = found.letter
    same_target = (
        lt.target_key.is_(None) if letter["target_key"] is None else lt.target_key == letter["target_key"]
    )
    condition = (
        lt.wave_id == letter["wave_id"],
        lt.kind == letter["kind"],
        same_target,
        lt.id != letter["id"],
    )
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(letter_table).where(*condition)).scalar_one()
        others = conn.execute(
            select(lt.final_text, lt.body_text).where(*condition).limit(_COMPARE_WITH)
        ).all()
    if not others:
        return 0, 0
    ratios = [
        difflib.SequenceMatcher(None, text, final or body, autojunk=False).quick_ratio()
        for final, body in others
    ]
    return round(100 * sum(ratios) / len(ratios)), count


def mark_opened(engine: Engine, wave_page: MemberWave) -> None:
    """Record the first time the member opened their page, for each letter it shows (the
    reports' "opened"); later visits change nothing."""
    ids = [found.letter["id"] for found in wave_page.letters if found.letter.get("opened_at") is None]
    if not ids:
        return
    lt = letter_table.c
    with engine.begin() as conn:
        conn.execute(
            letter_table.update().where(lt.id.in_(ids), lt.opened_at.is_(None)).values(opened_at=utcnow())
        )
