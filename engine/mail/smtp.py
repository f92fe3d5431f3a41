"""Delivering built messages: over SMTP when SMTP_URL is set, else into the outbox folder.

Both transports take bytes and an envelope and answer with a `Delivery`, or
raise `DeliveryError` saying whether trying again later could help.
"""

from __future__ import annotations

import contextlib
import ipaddress
import smtplib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from engine.errors import CampaignError
from engine.store.files import make_folder, write_atomically


class DeliveryError(Exception):
    def __init__(self, message: str, *, temporary: bool, fatal: bool = False):
        super().__init__(message)
        self.temporary = temporary
        # The relay refuses us altogether (bad credentials): stop, do not count per message.
        self.fatal = fatal


@dataclass
class Delivery:
    response: str


class FolderTransport:
    """The safe default: each message becomes an .eml file in a folder; nothing leaves the machine."""

    def __init__(self, folder: str | Path):
        self.folder = make_folder(folder)
        self.description = f"the folder {self.folder}/"

    def send(self, data: bytes, mail_from: str, recipients: list[str], name: str) -> Delivery:
        path = self.folder / f"{name}.eml"
        write_atomically(path, data)
        return Delivery(f"written to {path}")

    def close(self) -> None:
        pass


class SmtpTransport:
    """One SMTP connection, reused across messages and reopened when the server drops it."""

    def __init__(self, url: str, *, timeout: float = 30.0):
        parts = urlsplit(url)
        self.ssl = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.ssl else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout
        self.description = f"{parts.scheme}://{self.host}:{self.port}"
        self._smtp: smtplib.SMTP | None = None

    def _loopback(self) -> bool:
        try:
            return ipaddress.ip_address(socket.gethostbyname(self.host)).is_loopback
        except (OSError, ValueError):
            return False

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        try:
            if self.ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                elif self.username and not self._loopback():
                    smtp.quit()
                    raise CampaignError(
                        f"SMTP_URL: {self.description} offers no STARTTLS; refusing to send a password "
                        "in the clear (use smtps://)"
                    )
            if self.username:
                smtp.login(self.username, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"{self.description}: login refused: {_reply(exc)}", temporary=False, fatal=True
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{self.description}: cannot connect: {exc}", temporary=True) from None
        return smtp

    def send(self, data: bytes, mail_from: str, recipients: list[str], name: str) -> Delivery:
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                refused, reply = _transaction(self._smtp, mail_from, recipients, data)
            except smtplib.SMTPServerDisconnected:
                self._smtp = None
                if attempt == 2:
                    raise DeliveryError(f"{self.description}: connection lost", temporary=True) from None
                continue  # a reused connection the server had closed: reconnect once
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                raise DeliveryError(f"{code} {_text(text)}", temporary=400 <= code < 500) from None
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                raise DeliveryError(_reply(exc), temporary=400 <= exc.smtp_code < 500) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                raise DeliveryError(f"{self.description}: {exc}", temporary=True) from None
            if refused:
                code, text = next(iter(refused.values()))
                raise DeliveryError(f"{code} {_text(text)}", temporary=400 <= code < 500)
            return Delivery(reply)
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None


def _transaction(
    smtp: smtplib.SMTP, mail_from: str, recipients: list[str], data: bytes
) -> tuple[dict[str, tuple[int, bytes]], str]:
    """One SMTP mail transaction, as smtplib's sendmail runs it, with the same errors; returns
    the refused recipients and the server's final reply.

    Our addresses are validated when they are stored, so they go into the commands as they
    are: sendmail would parse each one again, which costs more per message than our own
    database work. Built messages already end lines in CRLF, so only dots need stuffing.
    Addresses outside ASCII take sendmail's way, with SMTPUTF8.
    """
    if not (mail_from.isascii() and all(r.isascii() for r in recipients)):
        options = ["SMTPUTF8"] if smtp.has_extn("smtputf8") else []
        return smtp.sendmail(mail_from, recipients, data, mail_options=options), "250 accepted"
    smtp.ehlo_or_helo_if_needed()
    size = f" SIZE={len(data)}" if smtp.does_esmtp and smtp.has_extn("size") else ""
    code, reply = smtp.docmd("MAIL", f"FROM:<{mail_from}>{size}")
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPSenderRefused(code, reply, mail_from)
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in recipients:
        code, reply = smtp.docmd("RCPT", f"TO:<{recipient}>")
        if code not in (250, 251):
            refused[recipient] = (code, reply)
            if code == 421:
                smtp.close()
                raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _abandon(smtp, 0)
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.docmd("DATA")
    if code != 354:
        _abandon(smtp, code)
        raise smtplib.SMTPDataError(code, reply)
    payload = (b"." if data.startswith(b".") else b"") + data.replace(b"\n.", b"\n..")
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    smtp.send(payload + b".\r\n")
    code, reply = smtp.getreply()
    if code != 250:
        _abandon(smtp, code)
        raise smtplib.SMTPDataError(code, reply)
    return refused, f"{code} {_text(reply)}"


def _abandon(smtp: smtplib.SMTP, code: int) -> None:
    """End a failed transaction so the connection can carry the next one (or close it on 421)."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.rset()


def _text(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"
