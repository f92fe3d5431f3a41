"""Staff accounts and their sessions: who may open the staff pages, and as what.

Only the faces use these (the staff pages, and `campaign users` on the command
line, which sits above the web layer), so they live here rather than in a
pipeline stage: no stage has any business knowing who is signed in. The
tables are in engine/store/models.py with the others.

Passwords are kept only as argon2id hashes; session tokens only as SHA-256
digests (a token is 256 random bits, so a fast hash is enough and a copy of the
database opens no session). Neither a password nor a hash is ever returned,
printed or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Engine, delete, false, select

from engine.errors import CampaignError
from engine.store.events import record_event
from engine.store.models import STAFF_ROLES, staff_session_table, staff_user_table, utcnow

MIN_PASSWORD = 12
# argon2-cffi's defaults (RFC 9106's second recommended set: 64 MiB, 3 passes).
_hasher = PasswordHasher()


@lru_cache(maxsize=1)
def _no_account() -> str:
    """Checked when no account has the address, so an unknown address takes as long as a wrong
    password. Made on first use: hashing costs a quarter of a second every command would pay."""
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class StaffUser:
    id: int
    email: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this user's role is `role` or a stronger one (viewer < staff < organiser)."""
        return role_allows(self.role, role)


def role_allows(held: str, needed: str) -> bool:
    if needed not in STAFF_ROLES:
        raise ValueError(f"unknown staff role {needed!r}")
    return held in STAFF_ROLES and STAFF_ROLES.index(held) >= STAFF_ROLES.index(needed)


def normalise_staff_email(email: str) -> str:
    """The address as stored: email-validator's form, lower-cased (staff type it at login)."""
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise CampaignError(f"EMAIL: {email!r} is not an email address ({exc})") from None


def check_role(role: str) -> str:
    if role not in STAFF_ROLES:
        raise CampaignError(f"ROLE: {role!r} is not one of {', '.join(STAFF_ROLES)}")
    return role


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise CampaignError(f"password: at least {MIN_PASSWORD} characters, please (a few words will do)")
    if len(password) > 1024:
        raise CampaignError("password: at most 1024 characters")


def add_user(engine: Engine, email: str, role: str, password: str) -> dict[str, Any]:
    """Create an account; refuses an address that has one, a short password, an unknown role."""
    address = normalise_staff_email(email)
    check_role(role)
    check_password(password)
    digest = _hasher.hash(password)
    with engine.begin() as conn:
        if conn.execute(select(staff_user_table.c.id).where(staff_user_table.c.email == address)).first():
            raise CampaignError(f"EMAIL: {address} has an account already (users role changes its role)")
        conn.execute(
            staff_user_table.insert().values(
                email=address, role=role, password_hash=digest, created_at=utcnow(), disabled=False
            )
        )
        record_event(conn, "staff.user_added", email=address, role=role)
    return {"email": address, "role": role}


def list_users(engine: Engine) -> list[dict[str, Any]]:
    """Every account, by address, without its hash."""
    c = staff_user_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(c.email, c.role, c.created_at, c.last_login_at, c.disabled).order_by(c.email)
        ).mappings()
        return [dict(row) for row in rows]


def _user_id(conn: Any, address: str) -> int:
    found = conn.execute(select(staff_user_table.c.id).where(staff_user_table.c.email == address)).first()
    if found is None:
        raise CampaignError(f"EMAIL: no account for {address} (users list shows them)")
    return int(found.id)


def remove_user(engine: Engine, email: str) -> None:
    """Delete an account and sign out every browser it is signed in on."""
    address = normalise_staff_email(email)
    with engine.begin() as conn:
        user_id = _user_id(conn, address)
        conn.execute(delete(staff_session_table).where(staff_session_table.c.user_id == user_id))
        conn.execute(delete(staff_user_table).where(staff_user_table.c.id == user_id))
        record_event(conn, "staff.user_removed", email=address)


def set_role(engine: Engine, email: str, role: str) -> None:
    """Change an account's role; its open sessions carry the new role from their next page."""
    address = normalise_staff_email(email)
    check_role(role)
    with engine.begin() as conn:
        user_id = _user_id(conn, address)
        conn.execute(staff_user_table.update().where(staff_user_table.c.id == user_id).values(role=role))
        record_event(conn, "staff.user_role", email=address, role=role)


def authenticate(engine: Engine, email: str, password: str) -> StaffUser | None:
    """The account these credentials open, or None (an unknown address, a wrong password, a
    disabled account: the caller cannot tell which, and neither can the clock)."""
    try:
        address = normalise_staff_email(email)
    except CampaignError:
        address = None
    c = staff_user_table.c
    row = None
    if address is not None:
        with engine.connect() as conn:
            row = conn.execute(select(staff_user_table).where(c.email == address)).first()
    try:
        _hasher.verify(row.password_hash if row is not None else _no_account(), password)
        matched = row is not None
    except (VerificationError, InvalidHashError):
        matched = False
    with engine.begin() as conn:
        if not matched or row is None or row.disabled:
            # The address is recorded only when it is an account's: a password typed into the
            # address box must not end up in the event log.
            record_event(conn, "staff.login_failed", email=address if row is not None else None)
            return None
        values: dict[str, Any] = {"last_login_at": utcnow()}
        if _hasher.check_needs_rehash(row.password_hash):
            values["password_hash"] = _hasher.hash(password)
        conn.execute(staff_user_table.update().where(c.id == row.id).values(**values))
        record_event(conn, "staff.login", email=row.email)
    return StaffUser(row.id, row.email, row.role)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(engine: Engine, user: StaffUser, hours: float) -> str:
    """A new session for `user`, lasting `hours`: the token for its cookie."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        # Sessions that ran out are cleared as new ones start: no job needs to run.
        conn.execute(delete(staff_session_table).where(staff_session_table.c.expires_at < now))
        conn.execute(
            staff_session_table.insert().values(
                token_hash=_digest(token),
                user_id=user.id,
                created_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
    return token


def session_user(engine: Engine, token: str | None) -> StaffUser | None:
    """The account a session cookie's token belongs to, while the session lasts and the account
    is enabled; None otherwise."""
    if not token or len(token) > 100:
        return None
    s, u = staff_session_table.c, staff_user_table.c
    with engine.connect() as conn:
        row = conn.execute(
            select(u.id, u.email, u.role, s.expires_at)
            .select_from(staff_session_table.join(staff_user_table, u.id == s.user_id))
            .where(s.token_hash == _digest(token), u.disabled == false())
        ).first()
    if row is None or _aware(row.expires_at) <= utcnow():
        return None
    return StaffUser(row.id, row.email, row.role)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)


def end_session(engine: Engine, token: str | None, user: StaffUser | None) -> None:
    """Sign a browser out: its session row goes, so the cookie opens nothing even if kept."""
    if not token:
        return
    with engine.begin() as conn:
        conn.execute(delete(staff_session_table).where(staff_session_table.c.token_hash == _digest(token)))
        if user is not None:
            record_event(conn, "staff.logout", email=user.email)


def session_form_token(secret: str, token: str) -> str:
    """The CSRF field of every form a session's pages carry: it proves the form came from a page
    of this very session (another site can make a browser post, but cannot read this value)."""
    return hmac.new(secret.encode(), f"staff-form:{_digest(token)}".encode(), hashlib.sha256).hexdigest()


def login_form_token(secret: str, nonce: str) -> str:
    """The CSRF field of the login form, tied to the short-lived cookie its page set."""
    return hmac.new(secret.encode(), f"staff-login:{nonce}".encode(), hashlib.sha256).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")
