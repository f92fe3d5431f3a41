"""Telling what an incoming message is: a bounce, a complaint, an automatic reply, or mail from a person.

Standard reports are read by their structure (RFC 3464 delivery status,
RFC 5965 feedback reports); the many servers that write their own bounce
formats are recognised by their sender and subject and read for the failed
address and the server's reply. Only the standard library's `email` package
parses; nothing here touches the database.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.utils import getaddresses, parseaddr

KINDS = ("bounce", "complaint", "auto_reply", "ordinary")

# How much of one text part is read. A reply, a bounce notice or a forwarded answer is a few
# pages; a 30 MB text part took minutes to match, and its words past this are never kept.
READ_LIMIT = 1_000_000


@dataclass
class FailedRecipient:
    address: str
    status: str | None = None  # RFC 3463 code such as 5.1.1, when given
    diagnostic: str | None = None
    permanent: bool = True


@dataclass
class Classification:
    kind: str
    failed: list[FailedRecipient] = field(default_factory=list)
    reason: str = ""


_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_SMTP_REPLY = re.compile(r"(?<!\d)([45]\d\d)[ -](?:[45]\.\d{1,3}\.\d{1,3}\s*)?[^\r\n]{0,200}")
_DAEMON = re.compile(
    r"^(mailer-daemon|post_?master|mail-daemon|mailer|double-bounce|mail\.delivery|bounce[s]?)@", re.I
)
_DAEMON_NAME = re.compile(
    r"mail delivery (subsystem|system|service)|mailer-daemon|postmaster|"
    r"mail administrator|delivery status notification",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|failed|has failed|problem)|"
    r"returned mail|mail delivery failed|failure notice|could not be delivered|non[- ]?delivery|"
    r"delivery notification|mail system error|returned to sender|message not delivered|"
    r"nicht zustellbar|unzustellbar|non remis|no se puede entregar|rejected|bounce",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^(automatic reply|auto(matic)?[- ]?(reply|response|antwort)|out of (the )?office|away from|"
    r"on vacation|vacation|abwesenheit|absence|r[ée]ponse automatique|respuesta autom[aá]tica|"
    r"risposta automatica|automatisch antwoord|autosvar)",
    re.I,
)
_LISTED = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:", re.M)
_FAILURE_WORDS = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|mailbox (unavailable|full|"
    r"not found)|recipient (rejected|address rejected)|invalid recipient|address rejected|undeliverable|"
    r"unrouteable|not found|quota|rejected|refused|denied|blocked|over quota|permanent|failed|"
    r"could not be delivered|host unknown|domain not found|550|551|552|553|554",
    re.I,
)


class _RememberingHeaders(HeaderRegistry):
    """The default policy's header factory, remembering the headers it built.

    The standard one builds a new class and parses the value again on every read of a header;
    the parser, classifying and matching read Content-Type and the address headers many times,
    and mail after one wave repeats many values. Header objects are immutable, so one built for
    a (name, value) serves every read of it.
    """

    # A parsed header takes some 10-20 KB (a long address list far more): short values only, and
    # not many, as a message's own repeated reads are what counts (Content-Type above all).
    _SIZE = 256
    _LONGEST = 256

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}
        self._remembered = functools.lru_cache(maxsize=self._SIZE)(self._build)

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def _build(self, name: str, value: str) -> BaseHeader:
        return self[name](name, value)

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > self._LONGEST:
            return self._build(name, value)
        return self._remembered(name, value)


# The default policy, with its headers remembered (see _RememberingHeaders).
INBOUND_POLICY = policy.default.clone(header_factory=_RememberingHeaders())


def parse(data: bytes) -> Message:
    try:
        message = message_from_bytes(data, policy=INBOUND_POLICY)
    except Exception:  # a header the modern parser cannot model: fall back to the lenient one
        message = message_from_bytes(data, policy=policy.compat32)
    return _repair_boundary(message, data) or message


_BOUNDARY_LINE = re.compile(rb"^--([^\s][^\r\n]{0,69}?)[ \t]*\r?$", re.M)


def _repair_boundary(message: Message, data: bytes) -> Message | None:
    """A multipart whose declared boundary is not in its body (a relay rewrote one of them):
    read it again with the boundary the body does use."""
    if content_type(message).partition("/")[0] != "multipart" or not any(
        type(d).__name__ == "StartBoundaryNotFoundDefect" for d in getattr(message, "defects", [])
    ):
        return None
    head, _, body = (
        data.partition(b"\n\n") if b"\r\n\r\n" not in data[:65536] else data.partition(b"\r\n\r\n")
    )
    found = _BOUNDARY_LINE.search(body)
    declared = message.get_param("boundary") if hasattr(message, "get_param") else None
    if found is None or not declared:
        return None
    actual = found.group(1).decode("ascii", "replace")
    if actual.endswith("--") and body.count(b"--" + found.group(1)) == 1:
        actual = actual[:-2]
    fixed = data.replace(declared.encode("ascii", "replace"), actual.encode("ascii", "replace"), 1)
    try:
        repaired = message_from_bytes(fixed, policy=INBOUND_POLICY)
    except Exception:
        return None
    if len(list(repaired.walk())) <= 1:
        return None
    repaired.repaired_boundary = True  # type: ignore[attr-defined]  # told to staff as a problem
    return repaired


def content_type(part: Message) -> str:
    """A part's content type, parsed once: the modern policy parses the header again on every call,
    and classifying and matching ask for it many times."""
    known = part.__dict__.get("_content_type")
    if known is None:
        known = part.__dict__["_content_type"] = part.get_content_type()
    return known


def header_text(message: Message, name: str) -> str:
    """The first `name` header of `message` as text ("" if absent or too broken to model).

    Remembered on the message: the default policy builds a new header object, parsing the
    value again, on every read, and matching reads the same few headers dozens of times."""
    cache = message.__dict__.setdefault("_campaign_headers", {})
    key = name.lower()
    if key not in cache:
        try:
            cache[key] = str(message.get(name) or "")
        except Exception:  # a header so broken the parser cannot model it
            cache[key] = ""
    return cache[key]


def _header(message: Message, name: str) -> str:
    return header_text(message, name).strip()


def classify_message(data: bytes) -> Classification:
    """What `data` (one raw message) is, and for a bounce or complaint, who failed."""
    return classify(parse(data))


def classify(message: Message) -> Classification:
    """What a parsed message is, and for a bounce or complaint, who failed."""
    report = _report_type(message)
    if report == "feedback-report" or _find_part(message, "message/feedback-report"):
        return Classification("complaint", _complaint_recipients(message), "feedback report (RFC 5965)")
    if _header(message, "X-Apple-Unsubscribe").lower() == "true":
        return Classification("complaint", _complaint_recipients(message), "unsubscribe request (Apple Mail)")
    if _HOTMAIL_COMPLAINT.search(_header(message, "Subject")):
        return Classification(
            "complaint", _complaint_recipients(message), "complaint report (Microsoft format)"
        )
    notification = _ses_notification(message)
    if notification is not None:
        return notification
    status_part = _find_part(message, "message/delivery-status")
    if status_part is not None or report == "delivery-status":
        failed = _delivery_status(status_part) if status_part is not None else []
        return Classification(
            "bounce", failed or _x_failed(message) or _from_text(message), "delivery status report (RFC 3464)"
        )
    if _looks_like_bounce(message):
        failed = _x_failed(message) or _from_text(message)
        if failed or not _is_auto_reply_by_subject(message):
            return Classification("bounce", failed, "delivery failure notice")
    if _is_auto_reply(message):
        return Classification("auto_reply", reason="automatic reply (RFC 3834 or usual headers)")
    return Classification("ordinary")


_HOTMAIL_COMPLAINT = re.compile(r"^\s*complaint about message from", re.I)


def _ses_notification(message: Message) -> Classification | None:
    """Amazon SES bounce and complaint notifications arrive as JSON (often through SNS)."""
    text = _body_text(message).strip()
    start = text.find("{")
    if start == -1 or "notificationType" not in text:
        return None
    try:
        # strict=False: notices wrap long lines inside strings; they also append a text footer.
        body, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("Message"), str):  # wrapped by SNS
        try:
            body = json.loads(body["Message"], strict=False)
        except ValueError:
            return None
    kind = str(body.get("notificationType", "")).lower()
    if kind == "bounce":
        bounce = body.get("bounce") or {}
        permanent = str(bounce.get("bounceType", "")).lower() != "transient"
        failed = []
        for recipient in bounce.get("bouncedRecipients") or []:
            if recipient.get("emailAddress"):
                code = _STATUS.search(str(recipient.get("status", "")))
                failed.append(
                    FailedRecipient(
                        str(recipient["emailAddress"]).lower(),
                        code.group(1) if code else None,
                        recipient.get("diagnosticCode"),
                        permanent,
                    )
                )
        return Classification("bounce", failed, "Amazon SES bounce notification")
    if kind == "complaint":
        complaint = body.get("complaint") or {}
        failed = [
            FailedRecipient(str(r.get("emailAddress", "")).lower(), None, "complaint")
            for r in complaint.get("complainedRecipients") or []
            if r.get("emailAddress")
        ]
        return Classification("complaint", failed, "Amazon SES complaint notification")
    return None


# An out-of-office's own words, for one that reaches us forwarded (its headers are gone).
_AUTO_TEXT = re.compile(
    r"\b(out of (the )?office|away from (the|my) (office|desk)|on (annual|maternity|sick) leave|"
    r"(currently|presently) (away|out|on leave|absent)|limited access to (my )?e-?mail|"
    r"(respond|reply|return) .{0,40}on my return|until my return|"
    r"this (mailbox|inbox|email address) is (not )?(monitored|unmonitored))",
    re.I,
)


def forwarded_auto_reply(subject: str | None, text: str) -> bool:
    """Whether a forwarded message is an automatic reply: its subject says so, or it is short and
    says the writer is away. A real answer that mentions leave runs longer than an absence note."""
    if _AUTO_SUBJECT.search(" ".join((subject or "").split())):
        return True
    return len(text) < 600 and bool(_AUTO_TEXT.search(text))


def _is_auto_reply_by_subject(message: Message) -> bool:
    return bool(_AUTO_SUBJECT.search(_header(message, "Subject")))


def _report_type(message: Message) -> str:
    if content_type(message) != "multipart/report":
        return ""
    return (message.get_param("report-type") or "").lower() if hasattr(message, "get_param") else ""


def _find_part(message: Message, wanted: str) -> Message | None:
    for part in message.walk():
        if content_type(part) == wanted:
            return part
    return None


def _delivery_status(part: Message) -> list[FailedRecipient]:
    """Per-recipient blocks of a message/delivery-status part whose Action is failed (or delayed)."""
    payload = part.get_payload()
    blocks: list[Message] = []
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
    elif isinstance(payload, str):
        # Some servers label the part but send it as text: read it as header blocks.
        blocks = [
            message_from_bytes(b.encode("utf-8", "replace"), policy=policy.compat32)
            for b in re.split(r"\r?\n\r?\n", payload)
            if b.strip()
        ]
    failed = []
    for block in blocks:
        recipient = _header(block, "Final-Recipient") or _header(block, "Original-Recipient")
        if not recipient:
            continue
        action = _header(block, "Action").lower()
        status = _header(block, "Status")
        code = _STATUS.search(status)
        if action and action not in ("failed", "delayed") and not (code and code.group(1)[0] in "45"):
            continue
        address = recipient.split(";", 1)[-1].strip().strip("<>")
        match = _ADDRESS.search(address)
        if match is None and "@" not in address:
            continue
        diagnostic = _header(block, "Diagnostic-Code").split(";", 1)[-1].strip() or None
        permanent = action != "delayed" and not (code and code.group(1).startswith("4"))
        # Quoted or odd local parts defeat a pattern: then keep what the server reported.
        reported = match.group(0) if match is not None else address
        failed.append(
            FailedRecipient(reported.lower(), code.group(1) if code else None, diagnostic, permanent)
        )
    return failed


def _x_failed(message: Message) -> list[FailedRecipient]:
    value = _header(message, "X-Failed-Recipients")
    if not value:
        return []
    text = _body_text(message)
    status, diagnostic = _status_near(text, 0)
    return [FailedRecipient(a.lower(), status, diagnostic) for a in _ADDRESS.findall(value)]


def _looks_like_bounce(message: Message) -> bool:
    sender = parseaddr(_header(message, "From"))
    if _DAEMON.match(sender[1] or "") or _DAEMON_NAME.search(sender[0] or ""):
        return True
    if _header(message, "X-Failed-Recipients"):
        return True
    subject = _header(message, "Subject")
    if _BOUNCE_SUBJECT.search(subject):
        return True
    return _header(message, "Return-Path") == "<>" and bool(_FAILURE_WORDS.search(_body_text(message)[:3000]))


def _body_text(message: Message) -> str:
    """The notice's own words: text parts before any attached original message."""
    texts = []
    for part in message.walk():
        if content_type(part) in ("message/rfc822", "text/rfc822-headers"):
            break
        if content_type(part).partition("/")[0] == "multipart" and isinstance(part.get_payload(), str):
            texts.append(part.get_payload())  # a multipart too broken to split: its text as it is
            continue
        if content_type(part).partition("/")[0] == "text":
            try:
                content = (
                    part.get_content() if hasattr(part, "get_content") else part.get_payload(decode=True)
                )
            except Exception:
                content = part.get_payload(decode=True)
            if isinstance(content, bytes):
                content = content.decode("utf-8", "replace")
            content = (content or "")[:READ_LIMIT]
            if content_type(part).partition("/")[2] == "html":
                content = strip_tags(content, " ")
            texts.append(content)
    text = "\n".join(texts)
    # Inline copies of the original message start with these; what follows is not the notice.
    cut = re.search(
        r"^(-+ ?(this is a copy|below this line|original message|the original message|"
        r"returned message|message headers follow).*)$|^Received: |^bounced e-?mail:",
        text,
        re.I | re.M,
    )
    return text[: cut.start()] if cut else text


_TAG = re.compile(r"<[^>]+>")


def strip_tags(html: str, replacement: str = "") -> str:
    """`html` with every tag replaced, in time linear in its length."""
    # Alone, the pattern tries each '<' to the end of the text when no '>' follows it: 64 KB of
    # '<' took seconds, a megabyte would take minutes. No tag can end after the last '>'.
    last = html.rfind(">")
    return _TAG.sub(replacement, html[: last + 1]) + html[last + 1 :]


def _status_near(text: str, position: int) -> tuple[str | None, str | None]:
    window = text[position : position + 1200]
    status = _STATUS.search(window)
    reply = _SMTP_REPLY.search(window)
    return (status.group(1) if status else None), (" ".join(reply.group(0).split()) if reply else None)


# Exim lists each failed address on its own line, as "address:" or "address <address>: reason".
_EXIM_LISTED = re.compile(r"^[ \t]*<?([^\s<>@]+@[^\s<>:]+?)>?(?:[ \t]+<[^<>\s]+>)?:(?:[ \t]|$)", re.M)
_FAILED_SECTION = re.compile(
    r"(?:following (?:address(?:\(es\)|es)?|recipients?)[^\n]{0,40}(?:failed|fatal errors?)[^\n]*)\n"
    r"((?:[ \t]*\n)*(?:[ \t]*\S[^\n]*\n){1,20})",
    re.I,
)
_LABELLED_RECIPIENT = re.compile(
    r"^[ \t]*(?:target|failed|original|intended)?[ \t]*(?:mail |e-?mail )?(?:recipient|address)"
    r"(?: address)?:[ \t]*<?([^\s<>@]+@[^\s<>]+?)>?[ \t\r]*$",
    re.I | re.M,
)
_RCPT_TO = re.compile(r"RCPT TO:\s*<?([^\s<>@]+@[^\s<>]+?)>?(?:\s|$)", re.I)
_FINAL_RECIPIENT = re.compile(r"^Final-Recipient:\s*[\w-]+;\s*<?([^\s<>]+@[^\s<>]+?)>?\s*$", re.I | re.M)
_ORIGINAL_TO = re.compile(r"^To:[ \t]*(.+)$", re.I | re.M)
_ORIGINAL_STARTS = re.compile(
    r"^\s*-*\s*(unsent message follows|original message follows|the header of the original message|"
    r"this is a copy of your message|returned message|undelivered message)",
    re.I | re.M,
)


def _from_text(message: Message) -> list[FailedRecipient]:
    """Failed addresses in a server's own notice: those the text says failed, not the sender's."""
    text = _body_text(message)
    found: dict[str, FailedRecipient] = {}
    listed = _listed_failures(text)
    if listed:
        return listed
    # qmail and Postfix put each failed address at the start of a line as "<address>:";
    # that is definitive, even when it is the address the notice was sent to.
    for line in _LISTED.finditer(text):
        address = line.group(1).lower()
        status, diagnostic = _status_near(text, line.start())
        permanent = not (status or "").startswith("4") and not (diagnostic or "").startswith("4")
        found.setdefault(address, FailedRecipient(address, status, diagnostic, permanent))
    if found:
        return list(found.values())
    ours = {a.lower() for _, a in getaddresses([_header(message, "To"), _header(message, "From")])}
    for match in _ADDRESS.finditer(text):
        address = match.group(0).strip(".").lower()
        if address in ours or address in found:
            continue
        around = text[max(0, match.start() - 300) : match.end() + 600]
        if not _FAILURE_WORDS.search(around):
            continue
        status, diagnostic = _status_near(text, max(0, match.start() - 200))
        permanent = not (status or "").startswith("4") and not (diagnostic or "").startswith("4")
        found[address] = FailedRecipient(address, status, diagnostic, permanent)
    if not found:
        found = {f.address: f for f in _original_recipients(message)}
    if not found:
        # A notice that names only one outside address: that is the failed one.
        others = {m.group(0).strip(".").lower() for m in _ADDRESS.finditer(text)} - ours
        if len(others) == 1:
            address = others.pop()
            status, diagnostic = _status_near(text, 0)
            found[address] = FailedRecipient(address, status, diagnostic)
    return list(found.values())


_FULL = re.compile(r"mailbox (is )?full|over quota|quota exceeded", re.I)


def _failure(text: str, address: str, position: int) -> FailedRecipient:
    status, diagnostic = _status_near(text, position)
    permanent = not (status or "").startswith("4") and not (diagnostic or "").startswith("4")
    if status is None and not (diagnostic or "").startswith("5") and _FULL.search(text[:3000]):
        permanent = False  # a full mailbox may empty: worth another try, not a dead address
    return FailedRecipient(address.strip(".").lower(), status, diagnostic, permanent)


def _listed_failures(text: str) -> list[FailedRecipient]:
    """Addresses a notice lists as failed, in the layouts of Exim, Sendmail and SMTP transcripts."""
    found: dict[str, FailedRecipient] = {}
    for match in _LABELLED_RECIPIENT.finditer(text):
        found.setdefault(match.group(1).lower(), _failure(text, match.group(1), 0))
    for section in _FAILED_SECTION.finditer(text):
        for match in _ADDRESS.finditer(section.group(1)):
            found.setdefault(match.group(0).lower(), _failure(text, match.group(0), section.end()))
    if not found:
        for match in _EXIM_LISTED.finditer(text):
            if _ADDRESS.fullmatch(match.group(1)):
                found.setdefault(match.group(1).lower(), _failure(text, match.group(1), match.start()))
    if not found:
        for match in _FINAL_RECIPIENT.finditer(text):
            found.setdefault(match.group(1).lower(), _failure(text, match.group(1), match.start()))
    if not found and _SMTP_REPLY.search(text):
        for match in _RCPT_TO.finditer(text):
            if _ADDRESS.fullmatch(match.group(1)):
                found.setdefault(match.group(1).lower(), _failure(text, match.group(1), match.start()))
    return list(found.values())


def _original_recipients(message: Message) -> list[FailedRecipient]:
    """Last resort: whom the returned original message was addressed to."""
    original = _find_part(message, "message/rfc822")
    to = ""
    if original is not None:
        payload = original.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        to = _header(inner, "To") if isinstance(inner, Message) else ""
    if not to:
        headers = _find_part(message, "text/rfc822-headers")
        text = ""
        if headers is not None:
            text = str(headers.get_payload())
        else:
            whole = _all_text(message)
            start = _ORIGINAL_STARTS.search(whole)
            text = whole[start.end() :] if start else ""
        found = _ORIGINAL_TO.search(text)
        to = found.group(1) if found else ""
    status, diagnostic = _status_near(_body_text(message), 0)
    return [
        FailedRecipient(a.lower(), status, diagnostic, not (status or "").startswith("4"))
        for _, a in getaddresses([to])
        if _ADDRESS.fullmatch(a or "")
    ]


def _all_text(message: Message) -> str:
    parts = []
    for part in message.walk():
        if content_type(part).partition("/")[0] == "text":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                parts.append(payload.decode("utf-8", "replace"))
    return "\n".join(parts)


def _complaint_recipients(message: Message) -> list[FailedRecipient]:
    part = _find_part(message, "message/feedback-report")
    addresses: list[str] = []
    if part is not None:
        payload = part.get_payload()
        text = payload if isinstance(payload, str) else "\n".join(str(p) for p in payload)
        for line in text.splitlines():
            if line.lower().startswith(("original-rcpt-to:", "removal-recipient:")):
                addresses += _ADDRESS.findall(line)
    if not addresses:
        original = _find_part(message, "message/rfc822") or _find_part(message, "text/rfc822-headers")
        if original is not None:
            inner = original.get_payload()
            inner_message = inner[0] if isinstance(inner, list) and inner else None
            to = _header(inner_message, "To") if inner_message is not None else ""
            if not to and isinstance(inner, str):
                found = re.search(r"^To:(.*)$", inner, re.M | re.I)
                to = found.group(1) if found else ""
            addresses += _ADDRESS.findall(to)
    return [FailedRecipient(a.lower(), None, "complaint") for a in dict.fromkeys(addresses)]


def _is_auto_reply(message: Message) -> bool:
    auto = _header(message, "Auto-Submitted").lower()
    if auto and auto != "no":
        return True
    if any(
        _header(message, h)
        for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress", "X-Autoresponse", "X-Vacation")
    ):
        return True
    precedence = _header(message, "Precedence").lower()
    if precedence == "auto_reply":
        return True
    # Vacation responders mark their replies bulk too; a mailing list's bulk mail is not a reply.
    if precedence in ("bulk", "junk") and not (
        _header(message, "List-Id") or _header(message, "List-Unsubscribe")
    ):
        return True
    return bool(_AUTO_SUBJECT.search(_header(message, "Subject")))
