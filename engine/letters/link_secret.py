"""The secret that signs members' links: its key file, the check that the database's links were
made with it, and new links (and invitations carrying them) after it changes.

The secret is kept out of the database, so a copy of the database alone
(a backup, a dump) cannot make anyone's link. A letter's link is found by the
SHA-256 of its token, so links made with one secret stop working, all at
once, when the letters' token hashes are remade with another
(`reissue_links`); until then commands that build links refuse a secret that
does not match, rather than mail 450,000 links that open nothing.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy import Engine, bindparam, select

from engine.errors import CampaignError
from engine.letters.links import link_token, new_message_id, token_hash
from engine.letters.waves import get_wave
from engine.settings import Settings, read_secret_file
from engine.store.events import record_event
from engine.store.models import letter_table, outbox_table, utcnow
from engine.store.suppression import may_email

_PAGE = 2000
# The invitation that goes with each kind of letter.
_INVITATION_KIND = {
    "letter": "invitation",
    "follow_up": "follow_up_invitation",
    "chaser": "chaser_invitation",
}


def create_key_file(path: str) -> bool:
    """Write a new random secret to `path`, readable by its owner only; False if it exists already.

    The key is written to a temporary file and then linked into place: no one
    ever reads a half-written key, and an existing key is never replaced.
    """
    target = Path(path)
    if target.exists():
        return False
    secret = secrets.token_urlsafe(48)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".key")
    except OSError as exc:
        raise CampaignError(f"{path}: cannot create the key file: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError:
            # A file system without hard links: create in place, still never over a file.
            return _create_in_place(target, secret)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


def _create_in_place(target: Path, secret: str) -> bool:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise CampaignError(f"{target}: cannot create the key file: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    return True


def ensure_secret(settings: Settings) -> tuple[Settings, bool]:
    """Settings with a link secret, creating the key file when there is neither it nor
    CAMPAIGN_SECRET; and whether it was created now."""
    if settings.secret is not None:
        return settings, False
    created = create_key_file(settings.secret_file)
    # Read back what is on disk: another `campaign init` may have written it first.
    secret = read_secret_file(settings.secret_file)
    settings = replace(settings, secret=secret, secret_origin=settings.secret_file)
    settings.validate()
    return settings, created


def _made_with(secret: str, nonce: str, stored_hash: str) -> bool:
    return token_hash(link_token(secret, nonce)) == stored_hash


def check_links_made_with(engine: Engine, settings: Settings) -> None:
    """Refuse a secret the database's links were not made with: every link built with it would fail.

    The newest letter stands for all: reissuing remakes every letter's link in one transaction.
    """
    secret = settings.require_secret()
    lt = letter_table.c
    with engine.connect() as conn:
        row = conn.execute(select(lt.link_nonce, lt.token_hash).order_by(lt.id.desc()).limit(1)).first()
    if row is not None and not _made_with(secret, row.link_nonce, row.token_hash):
        raise CampaignError(
            f"{settings.secret_origin}: this database's links were made with another secret (or before "
            "this version): use the secret they were made with, or run `campaign links reissue` to give "
            "every letter a new link (the links already sent then stop working)"
        )


def reissue_links(
    engine: Engine,
    settings: Settings,
    *,
    apply: bool = True,
    progress: Callable[[int], None] | None = None,
) -> int:
    """How many letters' links are not the ones the current secret makes; with `apply`, remake
    them, all in one transaction. Their old links (letter, unsubscribe, answers) stop working."""
    secret = settings.require_secret()
    lt = letter_table.c
    update = (
        letter_table.update()
        .where(lt.id == bindparam("letter_id"))
        .values(token_hash=bindparam("new_hash"), updated_at=bindparam("now"))
    )
    now = utcnow()
    changed = 0
    with engine.begin() as conn:
        last = 0
        while True:
            page = conn.execute(
                select(lt.id, lt.link_nonce, lt.token_hash).where(lt.id > last).order_by(lt.id).limit(_PAGE)
            ).all()
            if not page:
                break
            last = page[-1].id
            stale = [
                {"letter_id": row.id, "new_hash": new_hash, "now": now}
                for row in page
                if (new_hash := token_hash(link_token(secret, row.link_nonce))) != row.token_hash
            ]
            if stale and apply:
                conn.execute(update, stale)
            changed += len(stale)
            if progress is not None:
                progress(len(page))
        if apply and changed:
            record_event(conn, "links.reissue", letters=changed)
    return changed


@dataclass
class ReinviteResult:
    queued: int = 0
    waiting: int = 0  # an invitation is still in the outbox: it will carry the new link
    expired: int = 0
    not_emailed: int = 0  # opted out, or the address complained

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def reinvite_wave(
    engine: Engine, settings: Settings, wave_name: str, now: datetime | None = None
) -> ReinviteResult:
    """Queue a new invitation, with the member's current link, for every letter of the wave the
    member has not yet acted on and whose link has not expired (after `reissue_links`)."""
    settings.require_secret()
    now = now or utcnow()
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    result = ReinviteResult()
    lt, o = letter_table.c, outbox_table.c
    with engine.begin() as conn:
        wave = get_wave(conn, wave_name)
        if wave["status"] != "launched":
            raise CampaignError(f"wave {wave_name!r} is not launched: it has no invitations to send again")
        last = 0
        while True:
            letters = conn.execute(
                select(lt.id, lt.reference, lt.kind, lt.member_id, lt.token_expires_at)
                .where(lt.wave_id == wave["id"], lt.state.in_(("drafted", "invited")), lt.id > last)
                .order_by(lt.id)
                .limit(_PAGE)
            ).all()
            if not letters:
                break
            last = letters[-1].id
            sent = {}
            for row in conn.execute(
                select(o.letter_id, o.kind, o.status, o.to_addr, o.subject)
                .where(
                    o.letter_id.in_([letter.id for letter in letters]), o.kind.in_(_INVITATION_KIND.values())
                )
                .order_by(o.id)
            ):
                sent.setdefault(row.letter_id, []).append(row)
            rows = []
            for letter in letters:
                earlier = sent.get(letter.id, [])
                if letter.token_expires_at <= now:
                    result.expired += 1
                elif any(r.status in ("queued", "claimed", "sending") for r in earlier):
                    result.waiting += 1
                elif not earlier or not may_email(conn, letter.member_id, earlier[-1].to_addr):
                    # No invitation ever went (it was not allowed to), or none may go now.
                    result.not_emailed += 1
                else:
                    kind = _INVITATION_KIND[letter.kind]
                    rows.append(
                        {
                            "letter_id": letter.id,
                            "kind": kind,
                            "to_addr": earlier[-1].to_addr,
                            "subject": earlier[-1].subject,
                            "message_id": new_message_id(letter.reference, kind, domain),
                            "status": "queued",
                            "attempts": 0,
                            "created_at": now,
                        }
                    )
            if rows:
                conn.execute(outbox_table.insert(), rows)
                result.queued += len(rows)
        record_event(conn, "wave.reinvite", wave=wave_name, **result.as_dict())
    return result
