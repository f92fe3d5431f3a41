"""Settings read once from the environment; nothing else reads os.environ."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import parseaddr
from urllib.parse import urlsplit

from .errors import CampaignError

DEFAULT_DB = "sqlite:///campaign.db"
DEFAULT_POSTCODES_IO = "https://api.postcodes.io"
DEFAULT_MEMBERS_API = "https://members-api.parliament.uk"
# Reserved example domains: nothing is ever delivered to them by accident.
DEFAULT_FROM = "Campaigns Team <campaigns@union.example>"
DEFAULT_ORGANISING = "organising@union.example"
DEV_SECRET = "development-only-secret-do-not-use-in-production"

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
    env: str = "development"
    secret: str = DEV_SECRET
    base_url: str = "http://127.0.0.1:8000"
    mail_from: str = DEFAULT_FROM
    organising_email: str = DEFAULT_ORGANISING
    campaign_name: str = "the union"
    templates_dir: str = "templates"
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
    # Proxies whose X-Forwarded-For the member pages believe (none unless configured).
    trusted_proxies: tuple[Network, ...] = ()

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
            env=env.get("CAMPAIGN_ENV") or "development",
            secret=env.get("CAMPAIGN_SECRET") or DEV_SECRET,
            base_url=(env.get("CAMPAIGN_BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
            mail_from=env.get("CAMPAIGN_FROM") or DEFAULT_FROM,
            organising_email=env.get("CAMPAIGN_ORGANISING_EMAIL") or DEFAULT_ORGANISING,
            campaign_name=env.get("CAMPAIGN_NAME") or "the union",
            templates_dir=env.get("CAMPAIGN_TEMPLATES") or "templates",
            smtp_url=env.get("SMTP_URL") or None,
            bounce_domain=env.get("BOUNCE_DOMAIN") or None,
            outbox_dir=env.get("CAMPAIGN_OUTBOX_DIR") or "outbox",
            imap_password=env.get("IMAP_PASSWORD") or None,
            imap_ca_file=env.get("IMAP_CA_FILE") or None,
            authserv_id=env.get("CAMPAIGN_AUTHSERV_ID") or None,
            trusted_proxies=_networks(env, "CAMPAIGN_TRUSTED_PROXIES"),
        )
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
        return settings

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
        if self.env not in ("development", "production"):
            raise CampaignError(f"CAMPAIGN_ENV: {self.env!r} is not development or production")
        if self.env == "production" and (self.secret == DEV_SECRET or len(self.secret) < 32):
            raise CampaignError(
                "CAMPAIGN_SECRET: set a random secret of at least 32 characters in production "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
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
        if self.smtp_url:
            parts = urlsplit(self.smtp_url)
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                raise CampaignError(
                    "SMTP_URL: use smtp://user:password@host:587 (STARTTLS) or smtps://user:password@host:465"
                )
        if self.bounce_domain and not re.fullmatch(r"[A-Za-z0-9.-]+\.[A-Za-z]{2,}", self.bounce_domain):
            raise CampaignError(f"BOUNCE_DOMAIN: {self.bounce_domain!r} is not a domain name")
        if not 1 <= self.http_concurrency <= 16:
            raise CampaignError("CAMPAIGN_HTTP_CONCURRENCY: must be between 1 and 16")


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
