"""Finding the message a member forwarded: its real author, date, subject and words.

Members pass on their employer's reply in whatever mail client they use.
Some attach it whole (message/rfc822); most paste it inline under a block of
header lines in the client's own words and language: Gmail's
"---------- Forwarded message ---------" then From/Date/Subject/To, Outlook's
From/Sent/To/Subject after a rule, Apple Mail's "Begin forwarded message:",
Thunderbird's Subject/Date/From/To table, German "Von:/Gesendet:/Betreff:",
French "De :/Envoyé :/Objet :", and so on. Rather than one pattern per client,
a forward is recognised by its shape: a run of header lines, one naming the
author and at least two more naming the date, subject or recipients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from engine.inbox.classify import content_type

# Header labels as mail clients write them in forwards, by meaning (lower case, without the colon).
# fmt: off
_LABELS = {
    "from": (
        "from", "von", "de", "da", "van", "od", "från", "fra", "lähettäjä", "feladó", "от", "від",
        "gönderen", "expéditeur", "remitente", "mittente", "afsender", "oddi wrth", "anfonwr", "odesílatel",
    ),
    "to": (
        "to", "an", "à", "a", "para", "aan", "do", "till", "til", "vastaanottaja", "címzett", "кому",
        "kime", "at", "destinataire", "destinatario", "komu", "alıcı", "pour",
    ),
    "cc": ("cc", "kopie", "copie", "cópia", "kopia", "kopio", "másolat", "копия", "bilgi", "cc/bcc"),
    "date": ("date", "datum", "fecha", "data", "päivämäärä", "dátum", "дата", "tarih", "dyddiad"),
    "sent": (
        "sent", "gesendet", "envoyé", "enviado", "inviato", "verzonden", "wysłano", "skickat", "sendt",
        "lähetetty", "elküldve", "отправлено", "gönderildi", "anfonwyd", "odesláno", "enviada",
    ),
    "subject": (
        "subject", "betreff", "objet", "sujet", "asunto", "oggetto", "onderwerp", "temat", "ämne", "emne",
        "aihe", "tárgy", "тема", "konu", "assunto", "pwnc", "předmět",
    ),
}
# fmt: on
_FIELD_OF = {label: name for name, labels in _LABELS.items() for label in labels}
# "From: x", "*From:* x" (Outlook's plain text of bold labels), "De : x" (French spacing), "> From: x".
_HEADER_LINE = re.compile(r"^\s*(?:>\s*)*\**\s*([^\W\d][\w/ ]{0,14}?)\s*:\**\s*(.*)$")
# Lines that open a quotation of earlier mail, which is not part of the forwarded reply's own text.
_QUOTE_START = re.compile(
    r"^\s*(on .{4,120} wrote:|am .{4,120} schrieb .{1,80}:|le .{4,120} a écrit\s*:|el .{4,120} escribió:|"
    r"-{2,}\s*original message\s*-{2,}|-{2,}\s*ursprüngliche nachricht\s*-{2,}|"
    r"-{2,}\s*message d'origine\s*-{2,}|-{2,}\s*mensaje original\s*-{2,}|_{10,})\s*$",
    re.I,
)


_RFC5322_DATE = re.compile(
    r"^(?:[A-Za-z]{3},\s*)?\d{1,2}\s+[A-Za-z]{3}\s+\d{2,4}\s+\d{1,2}:\d{2}(?::\d{2})?\s*(?:[+-]\d{4}|[A-Z]{1,5})?"
    r"(?:\s*\(.*\))?$"
)


@dataclass
class Forwarded:
    """The forwarded message, as far as its wrapper shows it."""

    author_name: str | None
    author_addr: str | None
    date: datetime | None
    subject: str | None
    to: str | None
    text: str
    attached: bool = False


def parse_date(value: str) -> datetime | None:
    """A date as a header or a mail client's forward block writes it, in any common language."""
    value = " ".join(value.split())
    if not value:
        return None
    parsed = None
    # The standard library reads RFC 5322 dates, and would misread "2:12 PM" in others.
    if _RFC5322_DATE.match(value):
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
    if parsed is None:
        parsed = _common_english(value)
    if parsed is None:
        import dateparser  # slow, and slow to import: for the dates the formats below miss

        parsed = dateparser.parse(
            value,
            settings={"DATE_ORDER": "DMY", "RETURN_AS_TIMEZONE_AWARE": True, "TIMEZONE": "Europe/London"},
        )
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# How English-language clients write dates in forward blocks, tried before the general parser.
_ENGLISH_FORMATS = (
    "%a, %d %b %Y %H:%M",  # Gmail: "Mon, 16 Nov 2026 at 14:12" (with "at" removed)
    "%d %B %Y %H:%M:%S %Z",  # Apple Mail: "16 November 2026 at 14:12:09 GMT"
    "%d %B %Y %H:%M:%S",
    "%d %B %Y %H:%M",  # Outlook: "16 November 2026 16:40"
    "%A, %B %d, %Y %I:%M %p",  # Outlook (US): "Monday, November 16, 2026 2:12 PM"
    "%A, %d %B %Y %H:%M",  # Outlook (UK): "Monday, 16 November 2026 14:12"
    "%A, %d %B %Y, %H:%M:%S %Z",  # Yahoo: "Monday, 16 November 2026, 14:12:09 GMT"
)


def _common_english(value: str) -> datetime | None:
    cleaned = re.sub(r"\s+at\s+", " ", value)
    for form in _ENGLISH_FORMATS:
        try:
            parsed = datetime.strptime(cleaned, form)
        except ValueError:
            continue
        if parsed.tzinfo is None and cleaned.endswith(("GMT", "UTC")):
            parsed = parsed.replace(tzinfo=UTC)
        elif parsed.tzinfo is None:
            # Forward blocks give local time: the union's members are in the UK.
            from zoneinfo import ZoneInfo

            parsed = parsed.replace(tzinfo=ZoneInfo("Europe/London"))
        return parsed
    return None


def _header_field(line: str) -> tuple[str, str] | None:
    match = _HEADER_LINE.match(line)
    if not match:
        return None
    field = _FIELD_OF.get(" ".join(match.group(1).lower().split()))
    return (field, match.group(2).strip()) if field else None


def _author(value: str) -> tuple[str | None, str | None]:
    # Outlook writes "Name <mailto:x@y>" or "Name [mailto:x@y]"; Gmail "Name <x@y>".
    value = re.sub(r"\[mailto:([^\]]+)\]", r"<\1>", value).replace("mailto:", "")
    name, addr = parseaddr(value)
    if "@" not in addr:
        found = re.search(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+", value)
        addr = found.group(0) if found else ""
        name = name or value.replace(addr, "").strip(" <>[]\"'") or None
    return (name.strip("\"' ") or None) if name else None, (addr.lower() or None)


def own_text(lines: list[str]) -> str:
    """The forwarded message's words: up to where it quotes earlier mail."""
    kept: list[str] = []
    for index, line in enumerate(lines):
        if _QUOTE_START.match(line) or line.lstrip().startswith(">"):
            break
        field = _header_field(line)
        if field and field[0] == "from" and _header_block(lines, index) is not None:
            break  # an older message in the thread, with its own header block
        kept.append(line)
    return "\n".join(kept).strip()


def _header_block(lines: list[str], start: int) -> tuple[dict[str, str], int] | None:
    """The header fields of a forward block starting at `start`, and the line after it; or None."""
    fields: dict[str, str] = {}
    index = start
    blanks = 0
    last = ""
    while index < len(lines) and index < start + 16:
        line = lines[index]
        bare = line.lstrip(" \t>")  # Apple Mail quotes the whole forward, header lines included
        if not bare.strip():
            # Outlook on the web leaves a blank line between header lines; two end the block.
            blanks += 1
            if blanks > 1:
                break
            index += 1
            continue
        field = _header_field(line)
        if field is None:
            if blanks == 0 and last in ("to", "cc") and ("@" in bare or ";" in bare):
                index += 1  # a long recipient list wrapped onto the next line
                continue
            break
        name, value = field
        if name in fields:
            break
        fields[name] = value
        last, blanks = name, 0
        index += 1
    has_date = "date" in fields or "sent" in fields
    if "from" not in fields or len(fields) < 3 or not (has_date or "subject" in fields):
        return None
    return fields, index


def find_inline(text: str) -> Forwarded | None:
    """The first forward block in a message's text, or None when it holds none."""
    lines = text.replace("\r\n", "\n").split("\n")
    for index, line in enumerate(lines):
        field = _header_field(line)
        if field is None or field[0] not in ("from", "subject", "date", "sent"):
            continue
        block = _header_block(lines, index)
        if block is None:
            continue
        fields, after = block
        name, addr = _author(fields["from"])
        date_text = fields.get("date") or fields.get("sent") or ""
        body = [re.sub(r"^\s*>\s?", "", line) for line in lines[after:]]
        return Forwarded(
            author_name=name,
            author_addr=addr,
            date=parse_date(date_text) if date_text else None,
            subject=fields.get("subject") or None,
            to=fields.get("to"),
            text=own_text(body),
        )
    return None


def find_attached(message: Message) -> Forwarded | None:
    """The first message/rfc822 part: a forward as attachment carries real headers."""
    for part in message.walk():
        if content_type(part) != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            continue
        author = getaddresses([str(inner.get("From", ""))])
        name, addr = author[0] if author else ("", "")
        return Forwarded(
            author_name=name or None,
            author_addr=addr.lower() or None,
            date=parse_date(str(inner.get("Date", ""))),
            subject=str(inner.get("Subject", "")) or None,
            to=str(inner.get("To", "")) or None,
            text=own_text(body_text(inner).split("\n")),
            attached=True,
        )
    return None


def body_text(message: Message) -> str:
    """The readable text of a message: its plain part, or its HTML part reduced to text."""
    plain = html = None
    for part in message.walk():
        if content_type(part) == "message/rfc822" and part is not message:
            break
        if part.get_content_disposition() == "attachment":
            continue
        if content_type(part) == "text/plain" and plain is None:
            plain = _decoded(part)
        elif content_type(part) == "text/html" and html is None:
            html = _decoded(part)
    if plain is not None and plain.strip():
        return plain.replace("\r\n", "\n")
    if html:
        return html_to_text(html)
    return ""


def _decoded(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, AttributeError, ValueError, AssertionError):
        # An unknown or wrong charset: keep what can be read rather than nothing.
        data = part.get_payload(decode=True) or b""
        content = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return content if isinstance(content, str) else ""


def html_to_text(html: str) -> str:
    """Enough of an HTML body's text for matching and for staff to read."""
    from html import unescape

    text = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", " ", html)
    text = re.sub(r"(?i)<br\s*/?>|</(p|div|tr|li|h\d|blockquote)>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = unescape(text).replace("\xa0", " ")
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
