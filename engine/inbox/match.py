"""Which letter an incoming message is about, and whether the evidence is strong enough to act on.

The strongest evidence wins: a reply's In-Reply-To/References naming one of
our Message-IDs; then a tagged address (organising+REF@, or our VERP bounce
address); then a `[Ref: …]` in the subject or text, the forwarded message's
included; last, the forwarding member's address against their open letters.
Anyone can write to organising@ and every recipient has seen a reference, so
only some of it is proof: what the rest points to is a suggestion for staff
(`Analysis.suggested`, with why in `Analysis.triage`).

Longer than most modules because it is one idea, the evidence ladder, read
top to bottom; the steps are small methods a test can call alone.
"""

from __future__ import annotations

import difflib
import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from sqlalchemy import Connection, bindparam, exists, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import NoResultFound

from engine.inbox.classify import (
    Classification,
    classify,
    content_type,
    forwarded_auto_reply,
    header_text,
    parse,
)
from engine.inbox.documents import Document, attached_documents
from engine.inbox.forwards import Forwarded, body_text, find_attached, find_inline, own_text
from engine.inbox.sender_auth import SenderAuthentication, read_authentication
from engine.letters.links import check_token, link_token
from engine.settings import Settings
from engine.store.db import FastQuery
from engine.store.models import (
    employer_table,
    letter_table,
    member_table,
    mp_table,
    outbox_table,
    wave_table,
)
from engine.store.suppression import spellings

# A letter reference, as links.new_reference makes them (Crockford base32, 5-5).
_REF = r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}"
_LABELLED_REF = re.compile(rf"\bRef(?:erence)?\s*[:#.]?\s*({_REF})\b", re.I)
_BARE_REF = re.compile(rf"(?<![\w-])({_REF})(?![\w-])", re.I)
MESSAGE_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
# Our one-click unsubscribe link, as a complaint may quote it from the message's headers.
_UNSUBSCRIBE = re.compile(rf"/unsubscribe/({_REF})/([A-Za-z0-9_-]{{22}})(?![A-Za-z0-9_-])")
_EMBEDDED_MSGID = re.compile(r"^Message-ID:\s*(<[^<>\s]+@[^<>\s]+>)", re.I | re.M)
# Letters a reply can still arrive for, and those that a reply moves to `replied`.
OPEN = ("sent", "self_sent", "overdue", "replied", "bounced")
AWAITING = ("sent", "self_sent", "overdue")
_REPLY_SUBJECT = re.compile(
    r"^\s*(re|aw|sv|vs|antw|r|rif|odp|ynt|fw|fwd|wg|tr|rv|enc|i|doorst|vb)\s*(\[\d+\])?\s*:", re.I
)
# How mail clients mark a forward, in its subject or above the forwarded message, in several languages.
_FORWARD_SUBJECT = re.compile(
    r"^\s*(fwd?|fw|wg|tr|rv|enc|i|doorst|vb|vs|pd|fs|ynt|odp: fw)\s*(\[\d+\])?\s*:", re.I
)

# The lookups every message makes, built once: building a statement costs SQLAlchemy several
# times what SQLite takes to run it (bound values are passed by name at each use).
_lt, _m, _o = letter_table.c, member_table.c, outbox_table.c
_DELIVERED = ("sent", "uncertain", "bounced")
_LETTER_BY_ID = select(letter_table).where(_lt.id == bindparam("id"))
_LETTER_BY_REFERENCE = select(letter_table).where(_lt.reference == bindparam("reference"))
_LETTER_BY_MESSAGE_IDS = (
    select(letter_table)
    .join(outbox_table, _o.letter_id == _lt.id)
    .where(_o.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(_o.id.desc())
    .limit(1)
)
_SENT_BY_MESSAGE_IDS = (
    select(outbox_table)
    .where(_o.message_id.in_(bindparam("ids", expanding=True)), _o.status.in_(_DELIVERED))
    .order_by(_o.id.desc())
    .limit(1)
)
_SENT_BY_MESSAGE_ID = select(outbox_table).where(
    _o.message_id == bindparam("message_id"), _o.status.in_(_DELIVERED)
)
_IS_MEMBER = select(exists().where(_m.email.in_(bindparam("addresses", expanding=True))))
_MEMBER_EMAIL = select(_m.email).where(_m.id == bindparam("id"))
_OPEN_LETTERS_OF = (
    select(letter_table)
    .join(member_table, _m.id == _lt.member_id)
    .where(_m.email.in_(bindparam("addresses", expanding=True)), _lt.state.in_(OPEN))
    .order_by(_lt.id)
)
_LATEST_SENT_OF_LETTER = (
    select(outbox_table)
    .where(_o.letter_id == bindparam("letter_id"), _o.status.in_(("sent", "uncertain")))
    .order_by(_o.id.desc())
    .limit(20)
)
_LATEST_SENT_TO_MEMBER = (
    select(outbox_table)
    .where(
        _o.letter_id.in_(
            select(_lt.id)
            .join(member_table, _m.id == _lt.member_id)
            .where(_m.email.in_(bindparam("addresses", expanding=True)))
        ),
        _o.status.in_(("sent", "uncertain")),
    )
    .order_by(_o.id.desc())
    .limit(20)
)
_MP_SEATS_OF = select(mp_table.c.constituency_code).where(
    mp_table.c.email.in_(bindparam("addresses", expanding=True))
)
_EMPLOYERS_OF = select(employer_table.c.employer_key).where(
    employer_table.c.email.in_(bindparam("addresses", expanding=True))
)
_LAUNCHED_WAVES = select(wave_table.c.id, wave_table.c.fixed_email).where(wave_table.c.status == "launched")
# By the (wave, target) index: a launched wave can hold 450,000 letters.
_AWAITING_OF_TARGETS = (
    select(letter_table)
    .where(
        _lt.wave_id == bindparam("wave_id"),
        _lt.target_key.in_(bindparam("keys", expanding=True)),
        _lt.state.in_(AWAITING),
    )
    .limit(2)
)
_AWAITING_OF_FIXED = (
    select(letter_table)
    .where(_lt.wave_id == bindparam("wave_id"), _lt.target_key.is_(None), _lt.state.in_(AWAITING))
    .limit(2)
)

# Each lookup above, compiled for each database kind it has run on.
_fast: weakref.WeakKeyDictionary[Dialect, dict[int, FastQuery]] = weakref.WeakKeyDictionary()


def _rows(conn: Connection, statement: Any, **values: Any) -> list[dict[str, Any]]:
    """One of the lookups above, its rows as dicts, run through the driver directly (see FastQuery)."""
    queries = _fast.get(conn.dialect)
    if queries is None:
        queries = _fast[conn.dialect] = {}
    query = queries.get(id(statement))
    if query is None:
        query = queries[id(statement)] = FastQuery(statement, conn.dialect)
    return query.rows(conn, **values)


def _first(conn: Connection, statement: Any, **values: Any) -> dict[str, Any] | None:
    found = _rows(conn, statement, **values)
    return found[0] if found else None


@dataclass
class Analysis:
    kind: str
    classification: Classification
    letter: dict[str, Any] | None = None
    method: str | None = None
    forwarded: Forwarded | None = None
    author_name: str | None = None
    author_addr: str | None = None
    authored_at: datetime | None = None
    text: str = ""
    from_member: bool = False
    embedded_ids: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    from_addr: str = ""
    unsubscribe_links: list[tuple[str, str]] = field(default_factory=list)
    auth: SenderAuthentication = field(default_factory=SenderAuthentication)
    # A bounce's or complaint's message of ours, proven by its Message-ID or VERP address.
    sent: dict[str, Any] | None = None
    # Where the evidence points when it is too weak to act on, and why: staff decide.
    suggested: dict[str, Any] | None = None
    triage: str | None = None
    # PDF and Word documents attached to a reply, with their text where it could be read.
    documents: list[Document] = field(default_factory=list)


def header_value(message: Message, name: str) -> str:
    return " ".join(header_text(message, name).split())


def normal_reference(text: str) -> str:
    """A reference as typed by a person, in its stored form (misread letters put right)."""
    return text.upper().translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))


class Matcher:
    """Reads one parsed message against the letters in the database: kind, letter, proof."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.domain = parseaddr(settings.mail_from)[1].rpartition("@")[2].lower()

    def analyse(self, conn: Connection, message: Message) -> Analysis:
        classification = classify(message)
        kind = classification.kind
        analysis = Analysis(kind="reply" if kind == "ordinary" else kind, classification=classification)
        analysis.auth = read_authentication(message, self.settings.authserv_id)
        analysis.tags = self._address_tags(message)
        if kind in ("bounce", "complaint"):
            analysis.embedded_ids = _embedded_ids(message)
            if kind == "complaint":
                analysis.unsubscribe_links = _UNSUBSCRIBE.findall(_raw_text(message))
            self._tie_report(conn, analysis)
            return analysis
        text = body_text(message)
        name, addr = parseaddr(header_value(message, "From"))
        addr = addr.lower()
        analysis.from_addr = addr
        analysis.from_member = self._is_member(conn, addr)
        forwarded = find_attached(message) or find_inline(text)
        if (
            forwarded is not None
            and not forwarded.attached
            and not self._is_forward(message, text, analysis, forwarded)
        ):
            forwarded = None  # a reply quoting the mail it answers, not a forward
        if forwarded is not None and (forwarded.author_addr or forwarded.author_name):
            analysis.forwarded = forwarded
            analysis.author_name, analysis.author_addr = forwarded.author_name, forwarded.author_addr
            analysis.authored_at = forwarded.date
            analysis.text = forwarded.text
            if analysis.kind == "reply" and forwarded_auto_reply(forwarded.subject, forwarded.text):
                analysis.kind = "auto_reply"  # a member passing on an out-of-office: no answer yet
        else:
            analysis.author_name, analysis.author_addr = name or None, addr or None
            analysis.text = _own_words(text)
        # A reply sent as an attached letter: its words are in the document, not the email.
        analysis.documents = attached_documents(message)
        readable = [d for d in analysis.documents if d.text]
        if readable:
            parts = [analysis.text, *(f"[{d.filename}]\n{d.text}" for d in readable)]
            analysis.text = "\n\n".join(part for part in parts if part)
        letter, method = self.match(conn, message, text, analysis)
        analysis.method = method
        doubt = self._doubt(conn, letter, method, analysis) if letter is not None else None
        if doubt and analysis.kind == "reply":
            analysis.suggested, analysis.triage = letter, doubt
        else:
            analysis.letter = letter
        if (
            letter is None
            and analysis.kind == "reply"
            and not (
                analysis.from_member or forwarded or _REPLY_SUBJECT.match(header_value(message, "Subject"))
            )
            and not header_value(message, "In-Reply-To")
        ):
            # Nothing ties it to the campaign: a newsletter, a sales pitch, a stray message.
            analysis.kind = "unrelated"
        return analysis

    def _tie_report(self, conn: Connection, analysis: Analysis) -> None:
        """Which message of ours a bounce or complaint is about, and whether that is proven.

        Only our own Message-ID or VERP address in it proves it: both hold a random
        part that nobody who has merely seen a letter can know. Anything weaker (a
        reference, an address we once wrote to) is a suggestion for staff.
        """
        sent, method = self._sent_message(conn, analysis.embedded_ids, analysis.tags)
        if sent is None and analysis.kind == "complaint":
            sent, method = self._unsubscribed_message(conn, analysis.unsubscribe_links)
        kinds = analysis.kind
        if sent is not None:
            analysis.sent, analysis.method = sent, method
            analysis.letter = self._letter(conn, sent["letter_id"])
            if kinds == "complaint" and sent["kind"] == "letter":
                analysis.suggested, analysis.letter = analysis.letter, None
                analysis.triage = (
                    "a complaint about a member's letter to its recipient: recipients are "
                    "suppressed only by staff (replies accept suppresses it)"
                )
            return
        letter, method = self._by_tags(conn, analysis.tags)
        if letter is None:
            letter, method = self._by_ids(conn, analysis.embedded_ids, "original_message")
        if letter is not None:
            analysis.suggested, analysis.method = letter, "reference"
        if kinds == "bounce":
            permanent = [f for f in analysis.classification.failed if f.permanent]
            if not permanent:
                return  # a delay: recorded, and nothing would change
            outbox = self.message_to(conn, permanent[0].address, analysis.suggested)
            if outbox is not None and analysis.suggested is None:
                analysis.suggested = self._letter(conn, outbox["letter_id"])
                analysis.method = "failed_recipient"
            analysis.triage = (
                "a bounce that quotes no message of ours (neither our Message-ID nor our VERP "
                "address): nothing was marked bounced; replies accept marks it"
            )
        else:
            analysis.triage = (
                "a complaint that quotes no message of ours (neither our Message-ID nor our VERP "
                "address): nobody was suppressed; replies accept suppresses the addresses it names"
            )

    def _doubt(
        self, conn: Connection, letter: dict[str, Any], method: str | None, analysis: Analysis
    ) -> str | None:
        """Why a reply that points to `letter` must not be acted on without staff, or None."""
        if analysis.auth.failure:
            return analysis.auth.failure
        member = _first(conn, _MEMBER_EMAIL, id=letter["member_id"])
        member_email = member["email"] if member else None
        by_its_member = bool(member_email) and analysis.from_addr == str(member_email).lower()
        if analysis.forwarded is not None:
            if by_its_member:
                return None
            return (
                "forwarded by someone other than the member who wrote the letter: "
                "only they can forward its reply"
            )
        if by_its_member or method in ("in_reply_to", "address_tag"):
            return None
        return (
            "claims to answer a letter without answering a message of ours (no Message-ID or "
            "tagged address of ours in it): check who sent it"
        )

    def _is_forward(self, message: Message, text: str, analysis: Analysis, block: Forwarded) -> bool:
        """Whether an inline header block is a forwarded message rather than the quoted history
        below a reply (Outlook writes the same block for both)."""
        if (block.author_addr or "").endswith("@" + self.domain):
            return False  # our own mail, quoted: the reply is above it
        if _FORWARD_SUBJECT.match(header_value(message, "Subject")) or block.after_separator:
            return True
        # Members forward their targets' replies; anyone else writing with a quote is replying.
        return analysis.from_member

    def match(
        self, conn: Connection, message: Message, text: str, analysis: Analysis
    ) -> tuple[dict[str, Any] | None, str | None]:
        forwarded = analysis.forwarded
        ids = MESSAGE_ID.findall(
            header_value(message, "In-Reply-To") + " " + header_value(message, "References")
        )
        letter, method = self._by_ids(conn, [f"<{i}>" for i in ids], "in_reply_to")
        if letter is not None:
            return letter, method
        letter, method = self._by_tags(conn, analysis.tags)
        if letter is not None:
            return letter, method
        places = [header_value(message, "Subject"), forwarded.subject if forwarded else None, text]
        for pattern in (_LABELLED_REF, _BARE_REF):
            for place in places:
                for found in pattern.findall(place or ""):
                    letter = self._by_reference(conn, normal_reference(found))
                    if letter is not None:
                        return letter, "reference"
        return self._by_sender(conn, message, analysis)

    def _ours(self, ids: Iterable[str]) -> list[str]:
        return [i for i in dict.fromkeys(ids) if i.lower().endswith(f"@{self.domain}>")]

    def _by_ids(
        self, conn: Connection, ids: Iterable[str], method: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The letter of the newest of our messages among `ids`: proof (`method`) when the
        Message-ID is one we sent, only a reference when it merely has our shape."""
        ids = self._ours(ids)
        if not ids:
            return None, None
        letter = _first(conn, _LETTER_BY_MESSAGE_IDS, ids=ids)
        if letter is not None:
            return letter, method
        # Our Message-IDs begin with the letter's reference, which anyone who saw the letter knows.
        for message_id in ids:
            found = re.match(rf"<({_REF})\.", message_id, re.I)
            if found:
                letter = self._by_reference(conn, found.group(1).upper())
                if letter is not None:
                    return letter, "reference"
        return None, None

    def _sent_message(
        self, conn: Connection, ids: list[str], tags: list[str]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The message we sent that a report quotes by its exact Message-ID or VERP address."""
        ours = self._ours(ids)
        if ours:
            sent = _first(conn, _SENT_BY_MESSAGE_IDS, ids=ours)
            if sent is not None:
                return sent, "original_message"
        for tag in tags:
            reference, _, rest = tag.partition(".")
            if not rest:
                continue
            message_id = f"<{reference.upper()}.{rest.lower()}@{self.domain}>"
            sent = _first(conn, _SENT_BY_MESSAGE_ID, message_id=message_id)
            if sent is not None:
                return sent, "bounce_address"
        return None, None

    def _unsubscribed_message(
        self, conn: Connection, links: list[tuple[str, str]]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The union email whose own List-Unsubscribe link a complaint quotes: the link's token
        proves it, as only that email carried it."""
        secret = self.settings.secret
        if secret is None:
            return None, None
        o = outbox_table.c
        for reference, token in dict.fromkeys(links):
            letter = self._by_reference(conn, reference.upper())
            if letter is None or not letter.get("link_nonce"):
                continue
            if not check_token(link_token(secret, letter["link_nonce"], "unsubscribe"), token):
                continue
            row = conn.execute(
                select(outbox_table)
                .where(
                    o.letter_id == letter["id"],
                    o.kind != "letter",
                    o.status.in_(("sent", "uncertain", "bounced")),
                )
                .order_by(o.id.desc())
                .limit(1)
            ).first()
            if row is not None:
                return dict(row._mapping), "unsubscribe_link"
        return None, None

    def _letter(self, conn: Connection, letter_id: int) -> dict[str, Any]:
        letter = _first(conn, _LETTER_BY_ID, id=letter_id)
        if letter is None:  # as Core's .one() says
            raise NoResultFound("No row was found when one was required")
        return letter

    def _address_tags(self, message: Message) -> list[str]:
        """What a recipient address carries after its '+': a reference (organising+REF@…) or,
        in our VERP bounce address, a whole Message-ID's left part (bounces+REF.kind.random@…)."""
        values = [
            header_value(message, h) for h in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
        ]
        if not any("+" in value for value in values):
            return []  # most mail: reading the addresses out would find no tag
        tags = []
        for _, address in getaddresses(values):
            local = address.rpartition("@")[0]
            if "+" in local:
                tag = local.split("+", 1)[1]
                if re.fullmatch(rf"{_REF}(\.[a-z-]+\.[0-9a-f]{{16}})?", tag, re.I):
                    tags.append(tag)
        return list(dict.fromkeys(tags))

    def _by_tags(self, conn: Connection, tags: list[str]) -> tuple[dict[str, Any] | None, str | None]:
        for tag in tags:
            letter = self._by_reference(conn, tag.partition(".")[0].upper())
            if letter is not None:
                return letter, "address_tag"
        return None, None

    def _by_reference(self, conn: Connection, reference: str) -> dict[str, Any] | None:
        return _first(conn, _LETTER_BY_REFERENCE, reference=reference)

    def _is_member(self, conn: Connection, address: str) -> bool:
        if not address:
            return False
        found = _rows(conn, _IS_MEMBER, addresses=spellings(address))
        return bool(found and next(iter(found[0].values())))

    def _by_sender(
        self, conn: Connection, message: Message, analysis: Analysis
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The forwarding member's one open letter (preferring one to the forwarded author)."""
        address = parseaddr(header_value(message, "From"))[1]
        if not address:
            return None, None
        # A member forwarding from another address: the forwarded reply was addressed to them.
        senders = spellings(address)
        if analysis.forwarded is not None and analysis.forwarded.to:
            for _, forwarded_to in getaddresses([analysis.forwarded.to]):
                if "@" in forwarded_to:
                    senders += spellings(forwarded_to)
        rows = _rows(conn, _OPEN_LETTERS_OF, addresses=senders)
        if not rows:
            rows = self._by_target_address(conn, address)
            return (rows[0], "target_address") if len(rows) == 1 else (None, None)
        if analysis.forwarded is not None:
            rows = _narrowed(rows, analysis)
        awaiting = [r for r in rows if r["state"] in AWAITING]
        if len(awaiting) == 1:
            return awaiting[0], "sender"
        if not awaiting and len(rows) == 1:
            return rows[0], "sender"
        return None, None

    def _by_target_address(self, conn: Connection, address: str) -> list[dict[str, Any]]:
        """Letters awaiting a reply from this address: the target wrote to us straight."""
        addresses = spellings(address)
        keys = {r["constituency_code"] for r in _rows(conn, _MP_SEATS_OF, addresses=addresses)}
        keys |= {r["employer_key"] for r in _rows(conn, _EMPLOYERS_OF, addresses=addresses)}
        rows: list[dict[str, Any]] = []
        for wave in _rows(conn, _LAUNCHED_WAVES):
            fixed_email = wave["fixed_email"]
            if fixed_email and fixed_email.lower() == address.lower():
                rows += _rows(conn, _AWAITING_OF_FIXED, wave_id=wave["id"])
            elif keys:
                rows += _rows(conn, _AWAITING_OF_TARGETS, wave_id=wave["id"], keys=list(keys))
        return rows

    def message_to(
        self, conn: Connection, address: str, letter: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The message of `letter` (else of the member with that address) we last sent to `address`:
        only a suggestion, as anyone can name an address or a reference."""
        if letter is not None:
            candidates = _rows(conn, _LATEST_SENT_OF_LETTER, letter_id=letter["id"])
        else:
            candidates = _rows(conn, _LATEST_SENT_TO_MEMBER, addresses=spellings(address))
        return _sent_to(address, candidates)

    def messages_to(
        self, conn: Connection, addresses: list[str], letter: dict[str, Any] | None
    ) -> dict[str, dict[str, Any] | None]:
        """`message_to` for many addresses at once (a bounce may list thousands), keyed by the
        address in lower case: a query per 500 addresses rather than one per address."""
        if letter is not None or len(addresses) < 2:
            return {a.lower(): self.message_to(conn, a, letter) for a in addresses}
        o, m, lt = outbox_table.c, member_table.c, letter_table.c
        found: dict[str, dict[str, Any] | None] = {}
        unique = list(dict.fromkeys(addresses))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            spelt = list(dict.fromkeys(s for a in chunk for s in spellings(a)))
            by_member: dict[str, list[dict[str, Any]]] = {}
            for row in conn.execute(
                select(outbox_table, m.email.label("member_email"))
                .join(letter_table, lt.id == o.letter_id)
                .join(member_table, m.id == lt.member_id)
                .where(m.email.in_(spelt), o.status.in_(("sent", "uncertain")))
                .order_by(o.id.desc())
            ):
                values = dict(row._mapping)
                candidates = by_member.setdefault(values.pop("member_email").lower(), [])
                if len(candidates) < 20:
                    candidates.append(values)
            for address in chunk:
                found[address.lower()] = _sent_to(address, by_member.get(address.lower(), []))
        return found


def _sent_to(address: str, candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of our latest messages (newest first), the one sent to `address`; else the only one."""
    for candidate in candidates:
        addresses = [a.lower() for _, a in getaddresses([candidate["to_addr"], candidate["cc_addr"] or ""])]
        if address.lower() in addresses:
            return candidate
    return candidates[0] if len(candidates) == 1 else None


def _embedded_ids(message: Message) -> list[str]:
    """Message-IDs of the original message that a bounce or complaint quotes."""
    ids: list[str] = []
    for part in message.walk():
        if content_type(part) == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                found = MESSAGE_ID.search(header_value(inner, "Message-ID"))
                if found:
                    ids.append(f"<{found.group(1)}>")
        elif content_type(part).partition("/")[0] == "text":
            try:
                payload = part.get_payload(decode=True) or b""
            except Exception:
                continue
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
            ids += _EMBEDDED_MSGID.findall(text)
    return list(dict.fromkeys(ids))


def _raw_text(message: Message) -> str:
    """Every text part and quoted header block of a report, decoded, for finding links in."""
    texts = []
    for part in message.walk():
        if content_type(part).partition("/")[0] in ("text", "message"):
            try:
                payload = part.get_payload(decode=True)
            except Exception:
                continue
            if isinstance(payload, bytes):
                texts.append(payload.decode("utf-8", "replace"))
            elif isinstance(payload, list):
                texts += [str(inner) for inner in payload if isinstance(inner, Message)]
    return "\n".join(texts)


def _narrowed(rows: list[dict[str, Any]], analysis: Analysis) -> list[dict[str, Any]]:
    """The member's open letters a forwarded reply can answer, by its author: the very address
    we wrote to, else its domain (a council or trust answers from another person than the one
    we wrote to), else the organisation's name in the author's name or signature; then by how
    alike the subjects are. Each step narrows only when it keeps some; what remains may be
    several letters, and then staff choose."""
    forwarded = analysis.forwarded
    assert forwarded is not None
    author = (analysis.author_addr or "").lower()
    domain = author.rpartition("@")[2] if "@" in author else ""
    steps = [
        lambda r: bool(author) and (r["target_email"] or "").lower() == author,
        lambda r: bool(domain) and (r["target_email"] or "").lower().endswith("@" + domain),
        lambda r: _names_organisation(r["target_name"], analysis.author_name, forwarded.text),
    ]
    for step in steps:
        same = [r for r in rows if step(r)]
        if same:
            rows = same
            break
    subject = plain_subject(forwarded.subject)
    if subject and len(rows) > 1:
        scored = sorted(
            ((_alike(subject, plain_subject(r["subject"])), r) for r in rows), key=lambda x: -x[0]
        )
        best, runner_up = scored[0][0], scored[1][0]
        # Only a clear winner: letters of one campaign have alike subjects.
        if best >= 0.6 and best - runner_up >= 0.25:
            rows = [r for alike, r in scored if alike == best]
    return rows


def _names_organisation(target_name: str | None, author_name: str | None, text: str) -> bool:
    """Whether the author signs for the letter's recipient organisation ("HR Team, Kent County
    Council"). Only names of several words count: one word is too often an ordinary one."""
    name = " ".join((target_name or "").split()).casefold()
    if len(name.split()) < 2:
        return False
    signed = " ".join(f"{author_name or ''} {text[-400:]}".split()).casefold()
    return name in signed


def _own_words(text: str) -> str:
    """A direct reply's own text, without the quoted letter below it."""
    return own_text(text.replace("\r\n", "\n").split("\n"))


# -- suggestions for staff --------------------------------------------------------------

# How much each kind of evidence counts when ranking the letters an unmatched message may answer.
_SAME_MEMBER = 4.0  # forwarded from the member's own address
_SAME_NAME = 3.0  # forwarded by someone with the member's name, from an address we do not know
_SAME_TARGET = 2.0  # its author (or sender) is the letter's recipient
_SAME_DOMAIN = 1.0  # its author writes from the employer's own domain
_SUBJECT = 2.0  # times how alike its subject is to the letter's
_ENGINE_SUGGESTED = 5.0  # the evidence ladder pointed to it, too weakly to act on
_PER_TARGET = 50  # letters read per target and wave: a council can have thousands
_BRACKETED_REF = re.compile(rf"\[\s*Ref(?:erence)?\s*[:#.]?\s*{_REF}\s*\]", re.I)


def plain_subject(subject: str | None) -> str:
    """A subject without its Re:/Fwd: prefixes and our [Ref: …], to compare with a letter's."""
    text = _BRACKETED_REF.sub(" ", subject or "")
    while True:
        stripped = _FORWARD_SUBJECT.sub("", text, count=1)
        stripped = _REPLY_SUBJECT.sub("", stripped, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split()).casefold()


def suggest_letters(conn: Connection, inbound: dict[str, Any], limit: int = 3) -> list[dict[str, Any]]:
    """The letters an unmatched message most likely answers, best first, each with why and the
    one command that matches it: same member (by address, else by name), same target or
    employer domain, and how alike the subjects are. Only letters that went can be answered."""
    raw = inbound.get("raw")
    # Paper replies have no raw message: their from_addr is only what staff typed.
    sender_name, sender = parseaddr(header_value(parse(raw), "From") if raw else "")
    sender = sender.lower()
    author = (inbound.get("author_addr") or sender or "").lower()
    lt, m = letter_table.c, member_table.c
    columns = (*letter_table.c, m.membership_no, m.email.label("member_email"), m.first_name, m.last_name)
    found: dict[int, dict[str, Any]] = {}

    def add(rows: Iterable[Any]) -> None:
        for row in rows:
            found.setdefault(row.id, dict(row._mapping))

    base = select(*columns).join(member_table, m.id == lt.member_id).where(lt.state.in_(OPEN))
    if sender:
        add(conn.execute(base.where(m.email.in_(spellings(sender))).order_by(lt.id.desc()).limit(20)))
    name = " ".join(sender_name.split()).casefold()
    if name and not found and " " in name:
        # A member forwarding from an address we do not know still signs with their own name.
        full_name = func.lower(m.first_name + " " + m.last_name)
        add(conn.execute(base.where(full_name == name).order_by(lt.id.desc()).limit(20)))
    domain = author.rpartition("@")[2] if "@" in author else ""
    if domain:
        keys = set(
            conn.execute(
                select(employer_table.c.employer_key).where(
                    func.lower(employer_table.c.email).like(f"%@{_like(domain)}", escape="\\")
                )
            ).scalars()
        )
        keys |= set(
            conn.execute(
                select(mp_table.c.constituency_code).where(mp_table.c.email.in_(spellings(author)))
            ).scalars()
        )
        if keys:
            for wave_id in conn.execute(
                select(wave_table.c.id).where(wave_table.c.status == "launched")
            ).scalars():
                add(
                    conn.execute(
                        base.where(lt.wave_id == wave_id, lt.target_key.in_(keys))
                        .order_by(lt.id.desc())
                        .limit(_PER_TARGET)
                    )
                )
    engine_suggested = inbound.get("suggested_letter_id")
    if engine_suggested and engine_suggested not in found:
        add(
            conn.execute(
                select(*columns).join(member_table, m.id == lt.member_id).where(lt.id == engine_suggested)
            )
        )
    subject = plain_subject(inbound.get("subject"))
    ranked = []
    for letter in found.values():
        score, why = 0.0, []
        if engine_suggested == letter["id"]:
            score += _ENGINE_SUGGESTED
            why.append("the message points to it")
        if sender and (letter["member_email"] or "").lower() == sender:
            score += _SAME_MEMBER
            why.append("forwarded by its member")
        elif name and f"{letter['first_name']} {letter['last_name']}".casefold() == name:
            score += _SAME_NAME
            why.append("sent by someone with its member's name")
        target = (letter["target_email"] or "").lower()
        if author and target == author:
            score += _SAME_TARGET
            why.append("written by its recipient")
        elif domain and target.endswith("@" + domain):
            score += _SAME_DOMAIN
            why.append("from its recipient's domain")
        alike = _alike(subject, plain_subject(letter["subject"])) if subject else 0.0
        if alike >= 0.5:
            score += _SUBJECT * alike
            why.append(f"subject {round(100 * alike)}% alike")
        if not why:
            continue
        ranked.append((score, letter["state"] in AWAITING, letter["id"], letter, why))
    ranked.sort(key=lambda item: item[:3], reverse=True)
    return [
        {
            "reference": letter["reference"],
            "member": letter["membership_no"],
            "target_name": letter["target_name"],
            "state": letter["state"],
            "why": ", ".join(why),
            "score": round(score, 2),
            "command": f"campaign replies match {inbound['id']} {letter['reference']}",
        }
        for score, _, _, letter, why in ranked[:limit]
    ]


_WORD = re.compile(r"\w[\w'’-]*")


def _alike(one: str, other: str) -> float:
    """How alike two subjects are, word by word in order (0 to 1): letters share their letters,
    so comparing characters makes any two subjects look half alike."""
    return difflib.SequenceMatcher(None, _WORD.findall(one), _WORD.findall(other), autojunk=False).ratio()


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
