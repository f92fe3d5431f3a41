"""The tables. Timestamps are stored and returned as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


# Outcomes of resolving a member to an MP, stored in Member.mp_status.
MP_STATUSES = ("resolved", "bad_postcode", "terminated", "not_found", "no_mp", "pending")
# Outcomes of resolving a member to an employer, stored in Member.employer_status.
EMPLOYER_STATUSES = (
    "resolved",
    "unknown_urn",
    "closed",
    "independent",
    "no_trust",
    "not_covered",
    "no_employer",
    "pending",
)
# What each employer outcome means, for `members list --help` and the README.
EMPLOYER_STATUS_MEANINGS = {
    "resolved": "the school's employer is known",
    "unknown_urn": "the school URN is not in the GIAS schools list",
    "closed": "the school is closed",
    "independent": "an independent or non-maintained school: its proprietor is not in GIAS",
    "no_trust": "an academy whose trust GIAS does not name",
    "not_covered": "GIAS gives a type of school with no employer rule (a Welsh establishment, say)",
    "no_employer": "no school on record (supply, central or retired staff): no employer to write to",
    "pending": "not resolved yet",
}


class Member(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    membership_no: str = Field(max_length=40, unique=True)
    first_name: str
    last_name: str
    email: str = Field(index=True)  # incoming mail is matched by its sender
    postcode: str = Field(max_length=8, index=True)
    # "" for a member with no school (supply, central or retired staff): resolve gives them
    # employer_status no_employer. Empty rather than NULL, because SQLite cannot drop NOT NULL
    # without copying the member table, which the letters refer to.
    school_urn: str = Field(max_length=20, index=True)
    address_line1: str | None = None
    address_line2: str | None = None
    address_line3: str | None = None
    town: str | None = None
    role: str | None = None
    branch: str | None = None
    region: str | None = None
    # Any column of the export we do not know, kept for templates as a merge field.
    custom: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Digest of every imported value, so a re-import can tell "unchanged" cheaply.
    row_hash: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    # Written by `resolve` (resolved_at: when the outcome last changed); reset to
    # pending when the postcode or URN changes.
    mp_status: str = Field(default="pending", max_length=16, index=True)
    mp_detail: str | None = None
    constituency_code: str | None = Field(default=None, max_length=9)
    constituency_name: str | None = None
    employer_status: str = Field(default="pending", max_length=16, index=True)
    employer_detail: str | None = None
    employer_key: str | None = Field(default=None, index=True)
    employer_name: str | None = None
    resolved_at: datetime | None = None
    # Set when the member asks for no more campaign mail (unsubscribe, complaint).
    mail_opt_out_at: datetime | None = None
    # Set when the member's personal data was erased at their request (`members forget`).
    forgotten_at: datetime | None = None


class PostcodeLookup(SQLModel, table=True):
    """postcodes.io's answer for one postcode; only definite answers are cached."""

    __tablename__ = "postcode_lookup"
    postcode: str = Field(primary_key=True, max_length=8)
    # found | bad_postcode | not_found | terminated
    status: str = Field(max_length=16)
    constituency_code: str | None = Field(default=None, max_length=9)
    constituency_name: str | None = None
    country: str | None = None
    detail: str | None = None
    fetched_at: datetime = Field(default_factory=utcnow)


class MP(SQLModel, table=True):
    """The sitting MP of one constituency (2024 boundaries); a vacant seat has no name."""

    __tablename__ = "mp"
    constituency_code: str = Field(primary_key=True, max_length=9)
    constituency_name: str
    vacant: bool = False
    name: str | None = None
    party: str | None = None
    email: str | None = None
    address_as: str | None = None
    full_title: str | None = None
    postal_address: str | None = Field(default=None, sa_column=Column(Text))
    parliament_member_id: int | None = None
    parliament_constituency_id: int | None = None
    source: str = Field(default="csv", max_length=8)
    updated_at: datetime = Field(default_factory=utcnow)


class School(SQLModel, table=True):
    """One establishment from the GIAS extract, with the employer rule applied."""

    urn: str = Field(primary_key=True, max_length=20)
    name: str
    type_code: int | None = None
    type_name: str | None = None
    status: str | None = None
    la_code: str | None = None
    la_name: str | None = None
    trust_code: str | None = None
    trust_name: str | None = None
    postcode: str | None = None
    constituency_code: str | None = None
    # local_authority | governing_body | academy_trust, when the rule finds one
    employer_kind: str | None = None
    employer_key: str | None = Field(default=None, index=True)
    employer_name: str | None = None
    # None when the employer is known; otherwise a Member.employer_status value
    employer_problem: str | None = None
    employer_detail: str | None = None


class EmployerContact(SQLModel, table=True):
    """The union's own directory: who to write to at an employer, and how."""

    __tablename__ = "employer_contact"
    employer_key: str = Field(primary_key=True)
    name: str
    kind: str | None = None
    email: str | None = None
    postal_address: str | None = Field(default=None, sa_column=Column(Text))
    salutation: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """Append-only log of what each command did."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    action: str = Field(max_length=40)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))

    __table_args__ = (Index("ix_event_action_at", "action", "at"),)


# pledge: no letter and no target, only a question the member answers on their page.
WAVE_TARGETS = ("mp", "employer", "fixed", "pledge")
LETTER_STATES = (
    "drafted",
    "invited",
    "confirmed",
    "queued",
    "sent",
    "replied",
    "followed_up",
    "opted_out",
    "self_sent",
    "bounced",
    "unreachable",
    "failed",
    "overdue",
    "pledged",
    "declined",
)
# What each state means, for `letters list --help`, `wave status` and reports. The two bounces
# differ in who cannot be reached: the target (the letter went and came back) or the member (their
# invitation came back, so the letter never went and no target is waiting for it).
STATE_MEANINGS = {
    "drafted": "made at launch; the member's invitation has not gone yet",
    "invited": "the member's invitation has gone; they have not decided",
    "confirmed": "confirmed by the member",
    "queued": "the member asked us to send it; waiting in the outbox",
    "sent": "sent to its target",
    "replied": "its target replied",
    "followed_up": "followed up",
    "opted_out": "the member chose not to send it",
    "self_sent": "the member sent it themselves",
    "bounced": "the letter to the target bounced: we cannot reach the MP or employer",
    "unreachable": "the member's invitation bounced: we cannot reach the member; the letter never went",
    "failed": "could not be sent to its target (refused, suppressed or unbuildable)",
    "overdue": "sent, and no reply within the wave's reply window",
    "pledged": 'pledge waves: the member said "I pledge" (they can change their answer)',
    "declined": 'pledge waves: the member said "Not for me" (they can change their answer)',
}
# Letters that count as done for a wave's --done-label ("stepped down"): the letter went, whether
# we sent it or the member sent it themselves. A pledge wave's done letters are its pledges.
DONE_STATES = ("sent", "replied", "overdue", "followed_up", "self_sent")
# A wave's first letter, the follow-up drafted when its target replies, and the chaser when it does not.
LETTER_KINDS = ("letter", "follow_up", "chaser")
# What incoming mail is (InboundMessage.kind).
INBOUND_KINDS = ("reply", "auto_reply", "bounce", "complaint", "unrelated")
# What staff say a reply means for the campaign (InboundMessage.outcome).
OUTCOMES = ("supportive", "non_committal", "refusal", "holding", "acknowledgement")
# A member's answer to "Has your MP replied?" (Letter.mp_answer).
MP_ANSWERS = ("yes", "not_yet", "no")


class Wave(SQLModel, table=True):
    """One campaign action; editable until launched, when its templates are frozen."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=80)
    target: str = Field(max_length=10)  # mp | employer | fixed | pledge
    letter_template: str  # "" for a pledge wave, which has no letter
    invite_template: str
    subject: str | None = None  # overrides the letter template's subject block
    reply_days: int = 10
    link_days: int = 30
    # Drafted when the target replies / when it has not replied in reply_days working days.
    follow_up_template: str | None = None
    chaser_template: str | None = None
    # Days after an MP letter is sent before the member is asked whether the MP replied.
    ask_days: int = 14
    # What the letter asks, in one plain sentence for the invitation (None: the template's own words).
    asks: str | None = None
    filters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The nations whose members take part (england, wales, scotland, northern_ireland); None: all.
    nations: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The one recipient of a `fixed` wave.
    fixed_name: str | None = None
    fixed_email: str | None = None
    fixed_salutation: str | None = None
    fixed_address: str | None = Field(default=None, sa_column=Column(Text))
    # One letter per target (employer, MP, fixed recipient) however many selected members share it:
    # the lead member holds it, the others are named in it as co-signatories (launch.SharePlan).
    one_per_target: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    # The meeting the letter is for: an unanswered letter is chased `chase_before` working days
    # before it, and not at all from that day on.
    meeting_date: date | None = None
    chase_before: int = Field(default=5, sa_column_kwargs={"server_default": "5"})
    # The most letters the worker sends one target address in a day (Europe/London), the rest
    # waiting for the next days; 0: no cap; None (waves made before it existed): CAMPAIGN_DAILY_CAP.
    daily_cap: int | None = None
    # A pledge wave's question ("I will …"): the letter row's subject and text are this question.
    question: str | None = Field(default=None, sa_column=Column(Text))
    # What a letter that went counts as, shown with its count in `wave status` ("stepped down").
    done_label: str | None = Field(default=None, max_length=40)
    status: str = Field(default="draft", max_length=10)  # draft | launched
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    launched_at: datetime | None = None
    # Template sources as launched (CSS already inlined), so later edits to the
    # files never change what this wave's members receive.
    frozen: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class WaveAttachment(SQLModel, table=True):
    """A PDF or DOCX file sent with every letter of a wave and printed after it on paper.

    Its bytes are read when the organiser names the file and never again from disk: once the
    wave is launched (and can no longer be edited) they are what every letter carries.
    """

    __tablename__ = "wave_attachment"
    id: int | None = Field(default=None, primary_key=True)
    wave_id: int = Field(foreign_key="wave.id")  # indexed by uq_wave_attachment_name
    position: int  # the order they were attached in, which is the order they go in
    filename: str = Field(max_length=120)  # made safe for a mail header and any file system
    media_type: str = Field(max_length=80)
    size: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    added_at: datetime = Field(default_factory=utcnow)

    __table_args__ = (UniqueConstraint("wave_id", "filename", name="uq_wave_attachment_name"),)


class Letter(SQLModel, table=True):
    """One member's letter in one wave, with the merge and the target frozen at launch.

    Its HTML is not stored: it is the frozen text, escaped into paragraphs with
    the wave's frozen paragraph style (merge.paragraphs_html), so it is as
    frozen as the text and costs no space.
    """

    id: int | None = Field(default=None, primary_key=True)
    wave_id: int = Field(foreign_key="wave.id")  # indexed by uq_letter_wave_member
    member_id: int = Field(foreign_key="member.id")
    reference: str = Field(unique=True, max_length=16)
    state: str = Field(default="drafted", max_length=12)
    subject: str
    body_text: str = Field(sa_column=Column(Text, nullable=False))
    target_kind: str = Field(max_length=10)
    target_key: str | None = None
    target_name: str
    target_email: str | None = None
    target_salutation: str | None = None
    target_address: str | None = Field(default=None, sa_column=Column(Text))
    # The member as merged and the letter date, for the address block and the emails.
    merge_snapshot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Every link of this letter is an HMAC of this random value (never of the reference,
    # which is printed for the target to read); token_hash is the letter link's SHA-256.
    link_nonce: str = Field(max_length=32)
    token_hash: str = Field(unique=True, max_length=64)
    token_expires_at: datetime
    # What the member did on their page: the edited text (the merge above stays
    # on record; before they choose, the edits they saved), the home address they
    # gave, and when they chose.
    final_text: str | None = Field(default=None, sa_column=Column(Text))
    sender_address: str | None = Field(default=None, sa_column=Column(Text))
    decided_at: datetime | None = None
    # When the member first opened their page for it (the report's "opened").
    opened_at: datetime | None = None
    sent_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # letter | follow_up | chaser; a follow-up or chaser names the letter it follows.
    kind: str = Field(default="letter", max_length=10)
    parent_id: int | None = Field(default=None, foreign_key="letter.id")
    # What came back: the first reply, a bounce, or nothing within the reply window.
    replied_at: datetime | None = None
    bounce_reason: str | None = None
    overdue_at: datetime | None = None
    # "Has your MP replied?": when asked, when reminded, and the member's answer.
    asked_at: datetime | None = None
    reminded_at: datetime | None = None
    mp_answer: str | None = Field(default=None, max_length=8)
    mp_answered_at: datetime | None = None

    __table_args__ = (
        UniqueConstraint("wave_id", "member_id", "kind", name="uq_letter_wave_member_kind"),
        # Letters to one MP or employer: the page's similarity hint, and replies sent by the target.
        Index("ix_letter_wave_target", "wave_id", "target_key"),
        # A member's letters in every wave: incoming mail is matched by its sender, and the
        # unique index above starts with the wave, so without this each lookup read every letter.
        Index("ix_letter_member_id", "member_id"),
        # A letter's follow-up and chaser: the report counts follow-ups per letter, and without
        # this each count read every letter (3,000 letters: 6 s).
        Index("ix_letter_parent_id", "parent_id"),
    )


class OutboxMessage(SQLModel, table=True):
    """One queued email; its body is built from the wave's frozen templates when sent."""

    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    letter_id: int | None = Field(default=None, foreign_key="letter.id", index=True)
    # invitation | letter | receipt | follow_up_invitation | chaser_invitation | questionnaire[_reminder]
    kind: str = Field(max_length=24)
    to_addr: str
    cc_addr: str | None = None
    subject: str
    message_id: str = Field(unique=True)
    # queued → claimed → sending → sent, or failed; `uncertain` when a worker died
    # mid-transaction, so it may or may not have gone (resent only on request).
    status: str = Field(default="queued", max_length=10, index=True)
    attempts: int = 0
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    next_attempt_at: datetime | None = None
    smtp_response: str | None = None


class TargetDay(SQLModel, table=True):
    """Letters sent to one target address on one day (Europe/London): the daily cap's counter.

    Kept apart from the outbox so the worker checks the cap with one keyed upsert, never a count.
    """

    __tablename__ = "target_day"
    address: str = Field(primary_key=True)
    day: date = Field(primary_key=True)
    sent: int = 0


class SendControl(SQLModel, table=True):
    """Whether sending is paused (one row), and why: a dead relay must not burn through a wave."""

    __tablename__ = "send_control"
    id: int = Field(default=1, primary_key=True)
    paused_at: datetime | None = None
    reason: str | None = None


class InboundMessage(SQLModel, table=True):
    """One message read from the organising mailbox (or a paper reply logged by staff), kept raw."""

    __tablename__ = "inbound"
    id: int | None = Field(default=None, primary_key=True)
    # Message-ID, or a hash of the raw bytes where there is none: ingesting twice records once.
    dedupe_key: str = Field(unique=True, max_length=255)
    source: str
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int = 0
    message_id: str | None = None
    received_at: datetime = Field(default_factory=utcnow)
    ingested_at: datetime = Field(default_factory=utcnow)
    from_addr: str | None = None
    subject: str | None = None
    kind: str = Field(max_length=12, index=True)
    # Why the message could not be read, when it could not: it is kept and listed all the same.
    problem: str | None = None
    letter_id: int | None = Field(default=None, foreign_key="letter.id", index=True)
    match_method: str | None = Field(default=None, max_length=20)
    # The reply itself: for a forward, its real author, date and text, not the member's wrapper.
    forwarded: bool = False
    author_name: str | None = None
    author_addr: str | None = None
    authored_at: datetime | None = None
    text: str | None = Field(default=None, sa_column=Column(Text))
    attachment_name: str | None = None
    note: str | None = Field(default=None, sa_column=Column(Text))
    suggested_outcome: str | None = Field(default=None, max_length=16)
    outcome: str | None = Field(default=None, max_length=16)
    outcome_at: datetime | None = None
    # Why no automatic action was taken and staff must decide (a forged-looking forward,
    # a complaint about a target, a failed DMARC); None when the engine acted on it.
    triage: str | None = None
    # What the receiving server found of the sender (spf=… dkim=… dmarc=…), shown in triage.
    authentication: str | None = None
    # The letter the evidence points to when it was not strong enough to act on: staff confirm it.
    suggested_letter_id: int | None = Field(default=None, foreign_key="letter.id")
    # When its raw bytes and text were removed past the retention period (`campaign purge`).
    purged_at: datetime | None = None


class DeliveryFailure(SQLModel, table=True):
    """One failed recipient named in a bounce, with the server's status and reply."""

    __tablename__ = "delivery_failure"
    id: int | None = Field(default=None, primary_key=True)
    inbound_id: int = Field(foreign_key="inbound.id", index=True)
    address: str = Field(index=True)
    status: str | None = Field(default=None, max_length=12)
    diagnostic: str | None = Field(default=None, sa_column=Column(Text))
    permanent: bool = True
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")


class ForgottenMember(SQLModel, table=True):
    """A member erased at their request: only a digest of their number, so that an older export
    imported again does not bring them back."""

    __tablename__ = "forgotten_member"
    number_hash: str = Field(primary_key=True, max_length=64)
    forgotten_at: datetime = Field(default_factory=utcnow)


class Suppression(SQLModel, table=True):
    """An address that must get no more campaign mail (it complained)."""

    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(unique=True)
    reason: str = Field(max_length=20)
    inbound_id: int | None = Field(default=None, foreign_key="inbound.id")
    created_at: datetime = Field(default_factory=utcnow)


class StaffUser(SQLModel, table=True):
    """Someone who signs in to the staff pages: never a member's account. The password is kept
    only as an argon2 hash."""

    __tablename__ = "staff_user"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, max_length=254)
    role: str = Field(max_length=12)
    password_hash: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None
    disabled: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class StaffSession(SQLModel, table=True):
    """One signed-in browser: only a SHA-256 of its cookie's token is kept, so a copy of the
    database opens no session."""

    __tablename__ = "staff_session"
    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="staff_user.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


# What each staff role may do, weakest first: each may do all that the ones before it may.
STAFF_ROLES = ("viewer", "staff", "organiser")

member_table = Member.__table__
postcode_table = PostcodeLookup.__table__
mp_table = MP.__table__
school_table = School.__table__
employer_table = EmployerContact.__table__
event_table = Event.__table__
wave_table = Wave.__table__
attachment_table = WaveAttachment.__table__
letter_table = Letter.__table__
outbox_table = OutboxMessage.__table__
send_control_table = SendControl.__table__
target_day_table = TargetDay.__table__
inbound_table = InboundMessage.__table__
failure_table = DeliveryFailure.__table__
suppression_table = Suppression.__table__
forgotten_table = ForgottenMember.__table__
staff_user_table = StaffUser.__table__
staff_session_table = StaffSession.__table__
