"""Settings read once from the environment; nothing else reads os.environ."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from engine.errors import CampaignError

# The campaign's own templates sit beside pyproject.toml (the checkout `pip install -e` points
# at), not wherever `campaign` is run from; an install without them looks in ./templates.
PROJECT_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
if not PROJECT_TEMPLATES.is_dir():
    PROJECT_TEMPLATES = Path("templates")
DEFAULT_DB = "sqlite:///campaign.db"
DEFAULT_POSTCODES_IO = "https://api.postcodes.io"
DEFAULT_MEMBERS_API = "https://members-api.parliament.uk"
# Reserved example domains: nothing is ever delivered to them by accident.
DEFAULT_FROM = "Campaigns Team <campaigns@union.example>"
DEFAULT_ORGANISING = "organising@union.example"
# Unset branding names a union that plainly does not exist, so a demo or a half-configured
# install never speaks for a real one.
DEFAULT_NAME = "Example Schools Union"
# What a member's share links say beside the campaign page (CAMPAIGN_SHARE_TEXT overrides it).
DEFAULT_SHARE_TEXT = (
    "I've acted for fairer, safer school inspection: Ofsted's revised framework puts staff "
    "well-being at risk and should be paused. Will you join in?"
)
MAX_LOGO = 256 * 1024
# PNG and JPEG only: an SVG is a document that can carry script.
_LOGO_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
MIN_SECRET = 32
# An MP's office reads its inbox by hand: 50 letters a day is already a heavy day.
DEFAULT_DAILY_CAP = 50
DEFAULT_SIMILAR_WARN = 20
MAKE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    db_url: str = DEFAULT_DB
    postcodes_io_url: str = DEFAULT_POSTCODES_IO
    members_api_url: str = DEFAULT_MEMBERS_API
    http_timeout: float = 10.0
    http_tries: int = 5
    http_backoff: float = 0.5
    http_concurrency: int = 4
    # The key that signs members' links: CAMPAIGN_SECRET, else the key file `campaign init`
    # writes, else None. Never a default: anyone who knew it could make any member's link.
    secret: str | None = None
    # Where `campaign init` keeps the secret (CAMPAIGN_SECRET_FILE, else beside a SQLite
    # database, else campaign.key in the current folder), and where the secret was read from.
    secret_file: str = ""
    secret_origin: str = "CAMPAIGN_SECRET"
    # Proxies whose X-Forwarded-For the member pages believe (none unless configured).
    trusted_proxies: tuple[Network, ...] = ()
    base_url: str = "http://127.0.0.1:8000"
    mail_from: str = DEFAULT_FROM
    organising_email: str = DEFAULT_ORGANISING
    campaign_name: str = DEFAULT_NAME
    # Who signs the union's emails; unset, the display name in CAMPAIGN_FROM.
    sender_name: str = ""
    # A line at the foot of every member page and email (address, registration), and a logo
    # file shown on the pages and in HTML emails.
    footer: str = ""
    logo_file: str | None = None
    # The campaign page a member is offered to share once they have sent (or pledged), and the
    # words that go with it; no share links when the URL is unset.
    share_url: str | None = None
    share_text: str = DEFAULT_SHARE_TEXT
    templates_dir: str = str(PROJECT_TEMPLATES)
    smtp_url: str | None = None
    bounce_domain: str | None = None
    outbox_dir: str = "outbox"
    # Reading the organising mailbox: the password when the --imap URL leaves it out,
    # and a CA file for a server whose certificate the system does not trust.
    imap_password: str | None = None
    imap_ca_file: str | None = None
    # The authserv-id our receiving mail server writes in Authentication-Results: only its
    # verdicts are read (anyone can add such a header further down). Unset: all are read,
    # and only a failure is acted on.
    authserv_id: str | None = None
    # Files attached to a wave's letters, in KB: each file, and all of a wave's together. Base64
    # makes a message a third larger than its files, so 5 MB of files stays under the 10 MB that
    # many receiving servers (on-premises Exchange among them) accept by default.
    attach_file_max_kb: int = 5120
    attach_max_kb: int = 5120
    # How long incoming messages keep their raw bytes and text before `campaign purge` removes
    # them (their kind, letter, outcome and dates stay).
    retention_days: int = 365
    # How long a staff login lasts before the staff pages ask for the password again.
    staff_session_hours: float = 8.0
    # Flood control: the most letters one target address gets in a day, for waves that do not
    # set their own (--daily-cap); 0: no cap. And how many near-identical letters to one target
    # a launch warns about.
    daily_cap: int = DEFAULT_DAILY_CAP
    similar_warn: int = DEFAULT_SIMILAR_WARN

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            db_url=env.get("CAMPAIGN_DB") or DEFAULT_DB,
            postcodes_io_url=env.get("POSTCODES_IO_URL") or DEFAULT_POSTCODES_IO,
            members_api_url=env.get("MEMBERS_API_URL") or DEFAULT_MEMBERS_API,
            http_timeout=_number(env, "CAMPAIGN_HTTP_TIMEOUT", 10.0),
            http_tries=int(_number(env, "CAMPAIGN_HTTP_TRIES", 5)),
            http_backoff=_number(env, "CAMPAIGN_HTTP_BACKOFF", 0.5),
            http_concurrency=int(_number(env, "CAMPAIGN_HTTP_CONCURRENCY", 4)),
            secret=env.get("CAMPAIGN_SECRET") or None,
            secret_file=env.get("CAMPAIGN_SECRET_FILE") or "",
            trusted_proxies=_networks(env, "CAMPAIGN_TRUSTED_PROXIES"),
            base_url=(env.get("CAMPAIGN_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            mail_from=env.get("CAMPAIGN_FROM") or DEFAULT_FROM,
            organising_email=env.get("CAMPAIGN_ORGANISING_EMAIL") or DEFAULT_ORGANISING,
            campaign_name=env.get("CAMPAIGN_NAME") or DEFAULT_NAME,
            sender_name=env.get("CAMPAIGN_SENDER_NAME") or "",
            footer=env.get("CAMPAIGN_FOOTER") or "",
            logo_file=env.get("CAMPAIGN_LOGO") or None,
            share_url=env.get("CAMPAIGN_SHARE_URL") or None,
            share_text=env.get("CAMPAIGN_SHARE_TEXT") or DEFAULT_SHARE_TEXT,
            templates_dir=env.get("CAMPAIGN_TEMPLATES") or str(PROJECT_TEMPLATES),
            smtp_url=env.get("SMTP_URL") or None,
            bounce_domain=env.get("BOUNCE_DOMAIN") or None,
            outbox_dir=env.get("CAMPAIGN_OUTBOX_DIR") or "outbox",
            imap_password=env.get("IMAP_PASSWORD") or None,
            imap_ca_file=env.get("IMAP_CA_FILE") or None,
            authserv_id=env.get("CAMPAIGN_AUTHSERV_ID") or None,
            attach_file_max_kb=int(_number(env, "CAMPAIGN_ATTACH_FILE_MAX_KB", 5120)),
            attach_max_kb=int(_number(env, "CAMPAIGN_ATTACH_MAX_KB", 5120)),
            retention_days=int(_number(env, "CAMPAIGN_RETENTION_DAYS", 365)),
            staff_session_hours=_number(env, "CAMPAIGN_STAFF_SESSION_HOURS", 8.0),
            daily_cap=_whole(env, "CAMPAIGN_DAILY_CAP", DEFAULT_DAILY_CAP),
            similar_warn=_whole(env, "CAMPAIGN_SIMILAR_WARN", DEFAULT_SIMILAR_WARN),
        )
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        if not settings.secret_file:
            settings = replace(settings, secret_file=default_secret_file(settings.db_url))
        if settings.secret is None:
            secret = read_secret_file(settings.secret_file)
            if secret is not None:
                settings = replace(settings, secret=secret, secret_origin=settings.secret_file)
        settings.validate()
        return settings

    def require_secret(self) -> str:
        """The link secret, for commands that make or check members' links; refuses without one."""
        if self.secret is None:
            raise CampaignError(
                f"CAMPAIGN_SECRET: not set, and there is no key file {self.secret_file}: "
                "run `campaign init` to create it (or set CAMPAIGN_SECRET to 32 or more random characters)"
            )
        return self.secret

    @cached_property  # every email's context asks; parsing CAMPAIGN_FROM each time shows
    def signature(self) -> str:
        """Who signs the union's emails."""
        return self.sender_name or parseaddr(self.mail_from)[0] or self.campaign_name

    def campaign_context(self) -> dict[str, str]:
        """What templates see as `campaign`: the branding, read from settings only."""
        return {
            "name": self.campaign_name,
            "organising_email": self.organising_email,
            "sender_name": self.signature,
            "footer": self.footer,
            "logo_url": f"{self.base_url}/logo" if self.logo_file else "",
        }

    def logo(self) -> tuple[bytes, str] | None:
        """(bytes, media type) of CAMPAIGN_LOGO, checked; None when no logo is set."""
        if not self.logo_file:
            return None
        path = Path(self.logo_file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CampaignError(f"CAMPAIGN_LOGO: cannot read {path}: {exc.strerror}") from None
        if len(data) > MAX_LOGO:
            raise CampaignError(f"CAMPAIGN_LOGO: {path} is {len(data):,} bytes, at most {MAX_LOGO:,}")
        for magic, media_type in _LOGO_TYPES.items():
            if data.startswith(magic):
                return data, media_type
        raise CampaignError(f"CAMPAIGN_LOGO: {path} is not a PNG or JPEG image")

    def validate(self) -> None:
        for name, url in (
            ("POSTCODES_IO_URL", self.postcodes_io_url),
            ("MEMBERS_API_URL", self.members_api_url),
        ):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise CampaignError(f"{name}: {url!r} is not an http(s) URL")
        if "://" not in self.db_url:
            raise CampaignError(
                f"CAMPAIGN_DB: {self.db_url!r} is not a database URL "
                "(try sqlite:///campaign.db or postgresql://user@host/dbname)"
            )
        if self.http_tries < 1:
            raise CampaignError("CAMPAIGN_HTTP_TRIES: must be at least 1")
        if not 0 < self.staff_session_hours <= 24 * 30:
            raise CampaignError("CAMPAIGN_STAFF_SESSION_HOURS: must be more than 0 and at most 720 (30 days)")
        if self.secret is not None and len(self.secret) < MIN_SECRET:
            raise CampaignError(
                f"{self.secret_origin}: the link secret has {len(self.secret)} characters and needs "
                f"at least {MIN_SECRET} random ones (make one with {MAKE_SECRET})"
            )
        base = urlsplit(self.base_url)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise CampaignError(f"CAMPAIGN_BASE_URL: {self.base_url!r} is not an http(s) URL")
        if "@" not in parseaddr(self.mail_from)[1]:
            raise CampaignError(f"CAMPAIGN_FROM: {self.mail_from!r} is not an email address")
        if "@" not in self.organising_email:
            raise CampaignError(
                f"CAMPAIGN_ORGANISING_EMAIL: {self.organising_email!r} is not an email address"
            )
        for name, value, longest in (
            ("CAMPAIGN_NAME", self.campaign_name, 100),
            ("CAMPAIGN_SENDER_NAME", self.sender_name, 100),
            ("CAMPAIGN_FOOTER", self.footer, 300),
        ):
            # These go into mail headers and one-line places: a line break there is an injection.
            if any(ch in value for ch in "\r\n\x00"):
                raise CampaignError(f"{name}: must be one line")
            if len(value) > longest:
                raise CampaignError(f"{name}: at most {longest} characters")
        self.logo()  # a wrong logo path is named now, not on a member's page
        if self.share_url is not None:
            share = urlsplit(self.share_url)
            if (
                share.scheme not in ("http", "https")
                or not share.netloc
                or any(ch.isspace() for ch in self.share_url)
            ):
                raise CampaignError(f"CAMPAIGN_SHARE_URL: {self.share_url!r} is not an http(s) URL")
        if any(ch in self.share_text for ch in "\r\n\x00") or len(self.share_text) > 200:
            raise CampaignError("CAMPAIGN_SHARE_TEXT: one line of at most 200 characters")
        if self.smtp_url:
            parts = urlsplit(self.smtp_url)
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                raise CampaignError(
                    "SMTP_URL: use smtp://user:password@host:587 (STARTTLS) or smtps://user:password@host:465"
                )
        if self.bounce_domain and not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", self.bounce_domain):
            raise CampaignError(f"BOUNCE_DOMAIN: {self.bounce_domain!r} is not a domain name")
        for name, kb in (
            ("CAMPAIGN_ATTACH_FILE_MAX_KB", self.attach_file_max_kb),
            ("CAMPAIGN_ATTACH_MAX_KB", self.attach_max_kb),
        ):
            if not 1 <= kb <= 20480:
                raise CampaignError(f"{name}: must be between 1 and 20480 (KB)")
        if not 1 <= self.http_concurrency <= 16:
            raise CampaignError("CAMPAIGN_HTTP_CONCURRENCY: must be between 1 and 16")


def default_secret_file(db_url: str) -> str:
    """Where the link secret lives unless CAMPAIGN_SECRET_FILE says: beside a SQLite database
    file (campaign.db.key), else campaign.key in the current folder."""
    try:
        url = make_url(db_url)
    except ArgumentError:
        return str(Path.cwd() / "campaign.key")  # validate() then reports the bad URL
    database = url.database if url.get_backend_name() == "sqlite" else None
    if database and database != ":memory:" and not database.startswith("file:"):
        return f"{database}.key"
    return str(Path.cwd() / "campaign.key")


def read_secret_file(path: str) -> str | None:
    """The secret in a key file, or None when there is no such file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read the link secret: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not a link secret (not text)") from None
    return text.strip()


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    networks = []
    for item in (env.get(name) or "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise CampaignError(f"{name}: {item.strip()!r} is not an IP address or network") from None
    return tuple(networks)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CampaignError(f"{name}: {raw!r} is not a number") from None
    if value < 0:
        raise CampaignError(f"{name}: must not be negative")
    return value


def _whole(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.strip().isdigit():
        raise CampaignError(f"{name}: {raw!r} is not a whole number (0 or more)")
    return int(raw)
