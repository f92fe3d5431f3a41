"""The tables. Timestamps are stored and returned as aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


# Outcomes of resolving a member to an MP, stored in Member.mp_status.
MP_STATUSES = ("resolved", "bad_postcode", "terminated", "not_found", "no_mp", "pending")
# Outcomes of resolving a member to an employer, stored in Member.employer_status.
EMPLOYER_STATUSES = ("resolved", "unknown_urn", "closed", "independent", "no_trust", "not_covered", "pending")


class Member(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    membership_no: str = Field(max_length=40, unique=True)
    first_name: str
    last_name: str
    email: str
    postcode: str = Field(max_length=8, index=True)
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


member_table = Member.__table__
postcode_table = PostcodeLookup.__table__
mp_table = MP.__table__
school_table = School.__table__
employer_table = EmployerContact.__table__
event_table = Event.__table__
