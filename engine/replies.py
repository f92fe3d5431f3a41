"""Incoming mail: store every message raw, tell what it is, match it to its letter, and act on it.

The strongest evidence wins: a reply's In-Reply-To/References naming one of
our Message-IDs; then a tagged address (bounces+REF@ or organising+REF@);
then a `[Ref: …]` in the subject or text, the forwarded message's included;
last, the forwarding member's address against their open letters. What
cannot be matched waits for staff (`replies list --unmatched`).

Each message is stored and acted on in one transaction, so a run stopped at
any moment has either done all of a message or none of it; a message seen
again (same Message-ID, or same bytes when it has none) is recorded once.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from .classify import Classification, classify, content_type, parse
from .errors import CampaignError, failure_text
from .events import record_event
from .forwards import Forwarded, body_text, find_attached, find_inline, parse_date
from .inbox import CONNECTION_ERRORS, MailSource
from .links import check_token, link_token
from .models import (
    employer_table,
    failure_table,
    inbound_table,
    letter_table,
    member_table,
    mp_table,
    outbox_table,
    utcnow,
    wave_table,
)
from .outbox import INVITATIONS
from .outcomes import suggest_outcome
from .send import address_of
from .sender_auth import SenderAuthentication, read_authentication
from .settings import Settings
from .suppression import spellings, suppress_address

# A letter reference, as links.new_reference makes them (Crockford base32, 5-5).
_REF = r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}"
_LABELLED_REF = re.compile(rf"\bRef(?:erence)?\s*[:#.]?\s*({_REF})\b", re.I)
_BARE_REF = re.compile(rf"(?<![\w-])({_REF})(?![\w-])", re.I)
_MSGID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
# Our one-click unsubscribe link, as a complaint may quote it from the message's headers.
_UNSUBSCRIBE = re.compile(rf"/unsubscribe/({_REF})/([A-Za-z0-9_-]{{22}})(?![A-Za-z0-9_-])")
_EMBEDDED_MSGID = re.compile(r"^Message-ID:\s*(<[^<>\s]+@[^<>\s]+>)", re.I | re.M)
# Letters a reply can still arrive for, and those that a reply moves to `replied`.
_OPEN = ("sent", "self_sent", "overdue", "replied", "bounced")
_AWAITING = ("sent", "self_sent", "overdue")
_REPLY_SUBJECT = re.compile(
    r"^\s*(re|aw|sv|vs|antw|r|rif|odp|ynt|fw|fwd|wg|tr|rv|enc|i|doorst|vb)\s*(\[\d+\])?\s*:", re.I
)
# How mail clients mark a forward, in its subject or above the forwarded message, in several languages.
_FORWARD_SUBJECT = re.compile(
    r"^\s*(fwd?|fw|wg|tr|rv|enc|i|doorst|vb|vs|pd|fs|ynt|odp: fw)\s*(\[\d+\])?\s*:", re.I
)
_FORWARD_SEPARATOR = re.compile(
    r"forwarded message|begin forwarded message|weitergeleitete nachricht|message transf[ée]r[ée]|"
    r"mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|wiadomo[śs][ćc] przekazana|"
    r"videresendt melding|vidarebefordrat meddelande|neges wedi'i hanfon ymlaen",
    re.I,
)
# Kept text of one reply: enough for any letter's reply, bounded against a pasted novel.
_TEXT_LIMIT = 100_000


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


@dataclass
class IngestResult:
    source: str = ""
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    kinds: Counter = field(default_factory=Counter)
    matched: int = 0
    unmatched: int = 0
    problems: list[str] = field(default_factory=list)
    letters_replied: int = 0
    letters_bounced: int = 0
    addresses_suppressed: int = 0
    follow_ups: int = 0
    triaged: int = 0
    not_stored: int = 0
    interrupted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["kinds"] = dict(self.kinds)
        return data


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a header so broken the parser cannot model it
        return ""
    return " ".join(str(value or "").split())


def normal_reference(text: str) -> str:
    """A reference as typed by a person, in its stored form (misread letters put right)."""
    return text.upper().translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))


def dedupe_key(message: Message | None, data: bytes) -> tuple[str, str | None]:
    """What makes two copies the same message: its Message-ID, or its bytes when it has none.

    The Message-ID is taken with the sender, date and subject, which every copy of a
    message shares (its Received lines differ): a careless sender reusing one ID for
    different messages must not make us drop the second.
    """
    message_id = None
    if message is not None:
        found = _MSGID.search(_header(message, "Message-ID"))
        message_id = f"<{found.group(1)}>" if found else None
    if message_id and message is not None:
        same = "\0".join([message_id, *(_header(message, h) for h in ("From", "Date", "Subject"))])
        digest = hashlib.sha256(same.encode("utf-8", "replace")).hexdigest()[:16]
        return f"mid:{message_id[:200]}#{digest}", message_id[:998]
    return f"sha256:{hashlib.sha256(data).hexdigest()}", message_id


class Ingester:
    """Records messages one by one; also used for one message at a time by tests and `replies log`."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.domain = parseaddr(settings.mail_from)[1].rpartition("@")[2].lower()

    # -- one message ------------------------------------------------------
    def record(self, data: bytes, source: str, result: IngestResult | None = None) -> int | None:
        """Store one raw message and act on it; the new row's id, or None when it was stored already."""
        result = result if result is not None else IngestResult()
        result.read += 1
        problem = None
        message: Message | None
        try:
            message = parse(data)
        except Exception as exc:
            message, problem = None, f"cannot parse: {failure_text(exc)}"
        key, message_id = dedupe_key(message, data)
        now = utcnow()
        with self.engine.begin() as conn:
            if conn.execute(select(inbound_table.c.id).where(inbound_table.c.dedupe_key == key)).first():
                result.duplicates += 1
                return None
            analysis = None
            if message is not None:
                problem = _defects(message)
                try:
                    with conn.begin_nested():
                        analysis = self.analyse(conn, message)
                except Exception as exc:  # kept and listed, never dropped
                    problem = f"cannot read: {failure_text(exc)}"
            row = self._row(data, source, message, message_id, key, analysis, problem, now)
            inbound_id = self._insert(conn, row, key)
            if inbound_id is None:
                result.duplicates += 1
                return None
            result.kinds[row["kind"]] += 1
            result.stored += 1
            problem = row["problem"]
            if problem:
                result.problems.append(f"message {inbound_id} ({source}): {problem}")
            if analysis is not None and row["kind"] == analysis.kind:
                try:
                    with conn.begin_nested():
                        self.act(conn, inbound_id, analysis, result, now)
                except Exception as exc:  # the message stays stored, with what went wrong
                    problem = f"stored, but acting on it failed: {failure_text(exc)}"
                    conn.execute(
                        inbound_table.update().where(inbound_table.c.id == inbound_id).values(problem=problem)
                    )
                    result.problems.append(f"message {inbound_id} ({source}): {problem}")
            if row.get("triage"):
                result.triaged += 1
            if row["kind"] in ("reply", "auto_reply"):
                if row["letter_id"] is None:
                    result.unmatched += 1
                else:
                    result.matched += 1
            return inbound_id

    def _insert(self, conn: Connection, row: dict[str, Any], key: str) -> int | None:
        """The stored row's id; None when another run stored the same message a moment ago.

        A message the database will not take as read (a byte it refuses, a value out of
        range) is stored raw with the reason instead, so that it never stops the rest.
        """
        try:
            with conn.begin_nested():
                return conn.execute(inbound_table.insert().values(**row)).inserted_primary_key[0]
        except IntegrityError:
            if conn.execute(select(inbound_table.c.id).where(inbound_table.c.dedupe_key == key)).first():
                return None
            reason = "the database refused it as read"
        except DBAPIError as exc:
            reason = f"the database refused it as read ({failure_text(exc)})"
        bare = {
            name: row[name]
            for name in ("dedupe_key", "source", "raw", "size", "message_id", "received_at", "ingested_at")
        }
        bare.update(
            kind="unrelated",
            forwarded=False,
            problem=reason,
            triage="could not be read into the database: look at the raw message (replies show --raw)",
        )
        with conn.begin_nested():
            return conn.execute(inbound_table.insert().values(**bare)).inserted_primary_key[0]

    def _row(
        self,
        data: bytes,
        source: str,
        message: Message | None,
        message_id: str | None,
        key: str,
        analysis: Analysis | None,
        problem: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        received = now
        from_addr = subject = None
        if message is not None:
            try:
                received = parse_date(_header(message, "Date")) or now
            except (ValueError, OverflowError, TypeError):  # a date no parser can place
                received = now
            from_addr = _header(message, "From")[:500] or None
            subject = _header(message, "Subject")[:500] or None
        row: dict[str, Any] = {
            "dedupe_key": key,
            "source": source,
            "raw": data,
            "size": len(data),
            "message_id": message_id,
            "received_at": received,
            "ingested_at": now,
            "from_addr": from_addr,
            "subject": subject,
            "kind": "unrelated",
            "problem": problem,
            "forwarded": False,
        }
        if analysis is not None:
            letter = analysis.letter
            row.update(
                kind=analysis.kind,
                letter_id=letter["id"] if letter else None,
                suggested_letter_id=analysis.suggested["id"] if analysis.suggested else None,
                match_method=analysis.method,
                forwarded=analysis.forwarded is not None,
                author_name=analysis.author_name,
                author_addr=analysis.author_addr,
                authored_at=analysis.authored_at or received,
                text=analysis.text[:_TEXT_LIMIT] or None,
                triage=analysis.triage,
                authentication=analysis.auth.summary,
            )
            if analysis.kind == "reply" and analysis.text:
                row["suggested_outcome"] = suggest_outcome(analysis.text)
        return without_nul(row)

    # -- what it is and which letter ------------------------------------------
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
        name, addr = parseaddr(_header(message, "From"))
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
        else:
            analysis.author_name, analysis.author_addr = name or None, addr or None
            analysis.text = _own_words(text)
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
            and not (analysis.from_member or forwarded or _REPLY_SUBJECT.match(_header(message, "Subject")))
            and not _header(message, "In-Reply-To")
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
            outbox = self._message_to(conn, permanent[0].address, analysis.suggested)
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
        member_email = conn.execute(
            select(member_table.c.email).where(member_table.c.id == letter["member_id"])
        ).scalar()
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
        if _FORWARD_SUBJECT.match(_header(message, "Subject")) or _FORWARD_SEPARATOR.search(text):
            return True
        # Members forward their targets' replies; anyone else writing with a quote is replying.
        return analysis.from_member

    def match(
        self, conn: Connection, message: Message, text: str, analysis: Analysis
    ) -> tuple[dict[str, Any] | None, str | None]:
        forwarded = analysis.forwarded
        ids = _MSGID.findall(_header(message, "In-Reply-To") + " " + _header(message, "References"))
        letter, method = self._by_ids(conn, [f"<{i}>" for i in ids], "in_reply_to")
        if letter is not None:
            return letter, method
        letter, method = self._by_tags(conn, analysis.tags)
        if letter is not None:
            return letter, method
        places = [_header(message, "Subject"), forwarded.subject if forwarded else None, text]
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
        o = outbox_table.c
        row = conn.execute(
            select(letter_table)
            .join(outbox_table, o.letter_id == letter_table.c.id)
            .where(o.message_id.in_(ids))
            .order_by(o.id.desc())
            .limit(1)
        ).first()
        if row is not None:
            return dict(row._mapping), method
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
        o = outbox_table.c
        delivered = o.status.in_(("sent", "uncertain", "bounced"))
        ours = self._ours(ids)
        if ours:
            row = conn.execute(
                select(outbox_table).where(o.message_id.in_(ours), delivered).order_by(o.id.desc()).limit(1)
            ).first()
            if row is not None:
                return dict(row._mapping), "original_message"
        for tag in tags:
            reference, _, rest = tag.partition(".")
            if not rest:
                continue
            message_id = f"<{reference.upper()}.{rest.lower()}@{self.domain}>"
            row = conn.execute(select(outbox_table).where(o.message_id == message_id, delivered)).first()
            if row is not None:
                return dict(row._mapping), "bounce_address"
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
        return dict(conn.execute(select(letter_table).where(letter_table.c.id == letter_id)).one()._mapping)

    def _address_tags(self, message: Message) -> list[str]:
        """What a recipient address carries after its '+': a reference (organising+REF@…) or,
        in our VERP bounce address, a whole Message-ID's left part (bounces+REF.kind.random@…)."""
        values = [_header(message, h) for h in ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")]
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
        row = conn.execute(select(letter_table).where(letter_table.c.reference == reference)).first()
        return dict(row._mapping) if row else None

    def _is_member(self, conn: Connection, address: str) -> bool:
        if not address:
            return False
        return bool(
            conn.execute(select(exists().where(member_table.c.email.in_(spellings(address))))).scalar()
        )

    def _by_sender(
        self, conn: Connection, message: Message, analysis: Analysis
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The forwarding member's one open letter (preferring one to the forwarded author)."""
        address = parseaddr(_header(message, "From"))[1]
        if not address:
            return None, None
        # A member forwarding from another address: the forwarded reply was addressed to them.
        senders = spellings(address)
        if analysis.forwarded is not None and analysis.forwarded.to:
            for _, forwarded_to in getaddresses([analysis.forwarded.to]):
                if "@" in forwarded_to:
                    senders += spellings(forwarded_to)
        lt, m = letter_table.c, member_table.c
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(letter_table)
                .join(member_table, m.id == lt.member_id)
                .where(m.email.in_(senders), lt.state.in_(_OPEN))
                .order_by(lt.id)
            )
        ]
        if not rows:
            rows = self._by_target_address(conn, address)
            return (rows[0], "target_address") if len(rows) == 1 else (None, None)
        author = (analysis.author_addr or "").lower()
        if author and analysis.forwarded is not None:
            domain = author.rpartition("@")[2]
            same = [r for r in rows if (r["target_email"] or "").lower() == author]
            same = same or [r for r in rows if (r["target_email"] or "").lower().endswith("@" + domain)]
            if same:
                rows = same
        awaiting = [r for r in rows if r["state"] in _AWAITING]
        if len(awaiting) == 1:
            return awaiting[0], "sender"
        if not awaiting and len(rows) == 1:
            return rows[0], "sender"
        return None, None

    def _by_target_address(self, conn: Connection, address: str) -> list[dict[str, Any]]:
        """Letters awaiting a reply from this address: the target wrote to us straight."""
        addresses = spellings(address)
        keys = set(
            conn.execute(
                select(mp_table.c.constituency_code).where(mp_table.c.email.in_(addresses))
            ).scalars()
        )
        keys |= set(
            conn.execute(
                select(employer_table.c.employer_key).where(employer_table.c.email.in_(addresses))
            ).scalars()
        )
        w, lt = wave_table.c, letter_table.c
        rows: list[dict[str, Any]] = []
        for wave_id, fixed_email in conn.execute(select(w.id, w.fixed_email).where(w.status == "launched")):
            # By the (wave, target) index: a launched wave can hold 450,000 letters.
            condition = lt.target_key.in_(keys) if keys else None
            if fixed_email and fixed_email.lower() == address.lower():
                condition = lt.target_key.is_(None)
            if condition is None:
                continue
            rows += [
                dict(r._mapping)
                for r in conn.execute(
                    select(letter_table)
                    .where(lt.wave_id == wave_id, condition, lt.state.in_(_AWAITING))
                    .limit(2)
                )
            ]
        return rows

    # -- acting on it ------------------------------------------------------------
    def act(
        self, conn: Connection, inbound_id: int, analysis: Analysis, result: IngestResult, now: datetime
    ) -> None:
        """What the evidence proves, done; what it only suggests was set aside for staff in analyse()."""
        if analysis.kind == "bounce":
            self._record_failures(conn, inbound_id, analysis)
            if analysis.sent is not None:
                result.letters_bounced += bounce_message(conn, analysis.sent, analysis.classification, now)
        elif analysis.kind == "complaint":
            sent = analysis.sent
            if sent is not None and analysis.triage is None:
                # Only the recipient of the message complained about: never an address the report lists.
                address = address_of(sent["to_addr"])
                if suppress_address(conn, address, "complaint", inbound_id, now):
                    result.addresses_suppressed += 1
        elif analysis.kind == "reply" and analysis.letter is not None and self._counts_as_reply(analysis):
            replied = mark_replied(conn, analysis.letter, analysis.authored_at or now, now)
            result.letters_replied += replied
            if replied and follow_up(conn, analysis.letter, inbound_id, self.settings, now):
                result.follow_ups += 1

    def _counts_as_reply(self, analysis: Analysis) -> bool:
        """A member writing to us in their own words is not their target's reply."""
        if analysis.forwarded is not None:
            return True
        return not analysis.from_member

    def _record_failures(self, conn: Connection, inbound_id: int, analysis: Analysis) -> None:
        """Every failed recipient a bounce names, with the message it is (or seems to be) about."""
        for failure in analysis.classification.failed:
            outbox = analysis.sent or self._message_to(conn, failure.address, analysis.suggested)
            conn.execute(
                failure_table.insert().values(
                    **without_nul(
                        {
                            "inbound_id": inbound_id,
                            "address": failure.address[:320],
                            "status": (failure.status or None) and failure.status[:12],
                            "diagnostic": failure.diagnostic,
                            "permanent": failure.permanent,
                            "outbox_id": outbox["id"] if outbox else None,
                        }
                    )
                )
            )

    def _message_to(
        self, conn: Connection, address: str, letter: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The message of `letter` (else of the member with that address) we last sent to `address`:
        only a suggestion, as anyone can name an address or a reference."""
        o, m = outbox_table.c, member_table.c
        if letter is not None:
            among = o.letter_id == letter["id"]
        else:
            member_letters = select(letter_table.c.id).join(member_table, m.id == letter_table.c.member_id)
            among = o.letter_id.in_(member_letters.where(m.email.in_(spellings(address))))
        candidates = [
            dict(r._mapping)
            for r in conn.execute(
                select(outbox_table)
                .where(among, o.status.in_(("sent", "uncertain")))
                .order_by(o.id.desc())
                .limit(20)
            )
        ]
        for candidate in candidates:
            addresses = [
                a.lower() for _, a in getaddresses([candidate["to_addr"], candidate["cc_addr"] or ""])
            ]
            if address.lower() in addresses:
                return candidate
        return candidates[0] if len(candidates) == 1 else None

    # -- whole sources ----------------------------------------------------------
    def ingest(self, source: MailSource, *, progress: Callable[[int], None] | None = None) -> IngestResult:
        result = IngestResult(source=source.name)
        try:
            for incoming in source:
                try:
                    self.record(incoming.data, source.name, result)
                except CONNECTION_ERRORS:
                    raise
                except Exception as exc:
                    # Not even its raw bytes could be kept: it stays in the mailbox (unacknowledged)
                    # for the next run, and the rest go on.
                    where = incoming.label or source.name
                    result.problems.append(f"{where}: not stored: {failure_text(exc)}")
                    result.not_stored += 1
                    continue
                if incoming.ack is not None:
                    incoming.ack()
                if progress is not None:
                    progress(1)
        except CONNECTION_ERRORS as exc:
            # Everything stored so far is committed; the next run carries on from here.
            result.interrupted = f"{source.name}: connection lost ({exc.__class__.__name__}: {exc})"
        finally:
            source.close()
        return result


# Defects that mean parts of a message may be missing or garbled, as opposed to cosmetic ones.
_SERIOUS_DEFECTS = {
    "StartBoundaryNotFoundDefect": "the MIME boundary is missing",
    "NoBoundaryInMultipartDefect": "a multipart has no boundary",
    "CloseBoundaryNotFoundDefect": "a MIME part is not closed",
    "MultipartInvariantViolationDefect": "the multipart structure is broken",
    "InvalidBase64CharactersDefect": "base64 with stray characters",
    "InvalidBase64PaddingDefect": "truncated base64",
    "InvalidBase64LengthDefect": "truncated base64",
}


def _defects(message: Message) -> str | None:
    """What is wrong with a message's structure, for staff: it was read as far as it could be."""
    found: list[str] = []
    if getattr(message, "repaired_boundary", False):
        found.append("the declared MIME boundary is not the one used (read with the one used)")
    for part in message.walk():
        for defect in getattr(part, "defects", []):
            words = _SERIOUS_DEFECTS.get(type(defect).__name__)
            if words and words not in found:
                found.append(words)
    return f"broken MIME: {'; '.join(found)}" if found else None


def _embedded_ids(message: Message) -> list[str]:
    """Message-IDs of the original message that a bounce or complaint quotes."""
    ids: list[str] = []
    for part in message.walk():
        if content_type(part) == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                found = _MSGID.search(_header(inner, "Message-ID"))
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


def without_nul(row: dict[str, Any]) -> dict[str, Any]:
    """A row's text without NUL characters, which PostgreSQL refuses in text (raw bytes keep them)."""
    return {k: v.replace("\0", "") if isinstance(v, str) else v for k, v in row.items()}


def bounce_message(
    conn: Connection, outbox: dict[str, Any], classification: Classification, now: datetime
) -> int:
    """A message of ours failed for good: it is marked bounced, and so is its letter unless only
    the member's copy failed (the letter itself then reached its recipient). Letters marked."""
    cc = address_of(outbox["cc_addr"]).lower() if outbox.get("cc_addr") else None
    bounced = 0
    for failure in classification.failed:
        if not failure.permanent or (cc and failure.address.lower() == cc):
            continue
        reason = " ".join(x for x in (failure.status, failure.diagnostic) if x)[:500] or "bounced"
        reason = reason.replace("\0", "")
        conn.execute(
            outbox_table.update()
            .where(outbox_table.c.id == outbox["id"], outbox_table.c.status.in_(("sent", "uncertain")))
            .values(status="bounced", error=reason)
        )
        states: tuple[str, ...] | None = ("sent", "queued") if outbox["kind"] == "letter" else None
        if outbox["kind"] in INVITATIONS:
            states = ("drafted", "invited")
        if states:
            lt = letter_table.c
            bounced += conn.execute(
                letter_table.update()
                .where(lt.id == outbox["letter_id"], lt.state.in_(states))
                .values(state="bounced", bounce_reason=reason, updated_at=now)
            ).rowcount
    return bounced


def _own_words(text: str) -> str:
    """A direct reply's own text, without the quoted letter below it."""
    from .forwards import _own_text

    return _own_text(text.replace("\r\n", "\n").split("\n"))


def follow_up(
    conn: Connection, letter: dict[str, Any], inbound_id: int, settings: Settings, now: datetime
) -> bool:
    from .followups import draft_follow_up  # follow-ups build on this module

    return draft_follow_up(conn, letter, inbound_id, settings, now)


def mark_replied(conn: Connection, letter: dict[str, Any], replied_at: datetime, now: datetime) -> int:
    """sent/self-sent/overdue → replied, for the letter and, for a chaser, the letter it chased."""
    lt = letter_table.c
    ids = [letter["id"]] + ([letter["parent_id"]] if letter.get("parent_id") else [])
    done = conn.execute(
        letter_table.update()
        .where(lt.id.in_(ids), lt.state.in_(_AWAITING))
        .values(state="replied", replied_at=replied_at, updated_at=now)
    ).rowcount
    return 1 if done else 0


def reply_for(conn: Connection, reply_id: int) -> dict[str, Any]:
    row = conn.execute(select(inbound_table).where(inbound_table.c.id == reply_id)).first()
    if row is None:
        raise CampaignError(f"no message {reply_id} (see: campaign replies list)")
    return dict(row._mapping)


def letter_by_reference(conn: Connection, reference: str) -> dict[str, Any]:
    row = conn.execute(
        select(letter_table).where(letter_table.c.reference == normal_reference(reference.strip()))
    ).first()
    if row is None:
        raise CampaignError(f"no letter with reference {reference!r}")
    return dict(row._mapping)


# -- what staff do --------------------------------------------------------------------


def list_messages(
    engine: Engine,
    *,
    unmatched: bool = False,
    kind: str | None = None,
    reference: str | None = None,
    problems: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Incoming messages, newest first, with the letter each matched and, for bounces, who failed."""
    i, lt = inbound_table.c, letter_table.c
    suggested = letter_table.alias("suggested")
    stmt = (
        select(
            i.id,
            i.from_addr.label("from"),
            i.subject,
            i.received_at.label("received"),
            i.kind,
            lt.reference,
            i.match_method,
            i.author_name,
            i.author_addr,
            i.forwarded,
            i.suggested_outcome,
            i.outcome,
            i.problem,
            i.source,
            i.triage,
            suggested.c.reference.label("suggested_reference"),
            i.authentication,
        )
        .select_from(
            inbound_table.outerjoin(letter_table, lt.id == i.letter_id).outerjoin(
                suggested, suggested.c.id == i.suggested_letter_id
            )
        )
        .order_by(i.id.desc())
    )
    if unmatched:
        # Waiting for staff: mail from people that no evidence tied to a letter, and anything
        # the evidence was too weak to act on.
        stmt = stmt.where(
            or_(
                i.triage.is_not(None),
                and_(
                    i.letter_id.is_(None),
                    i.kind.in_(("reply", "unrelated")),
                    or_(i.match_method.is_(None), i.match_method != "dismissed"),
                ),
            )
        )
    if kind:
        stmt = stmt.where(i.kind == kind)
    if reference:
        stmt = stmt.where(lt.reference == normal_reference(reference))
    if problems:
        stmt = stmt.where(i.problem.is_not(None))
    if limit:
        stmt = stmt.limit(limit)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        bounce_ids = [r["id"] for r in rows if r["kind"] == "bounce"]
        failures: dict[int, list[dict[str, Any]]] = {}
        for start in range(0, len(bounce_ids), 500):
            chunk = bounce_ids[start : start + 500]
            f = failure_table.c
            for row in conn.execute(
                select(f.inbound_id, f.address, f.status, f.diagnostic, f.permanent)
                .where(f.inbound_id.in_(chunk))
                .order_by(f.id)
            ):
                failures.setdefault(row.inbound_id, []).append(
                    {
                        "address": row.address,
                        "status": row.status,
                        "diagnostic": row.diagnostic,
                        "permanent": row.permanent,
                    }
                )
    for row in rows:
        failed = failures.get(row["id"], [])
        row["failed"] = failed
        row["failed_recipient"] = failed[0]["address"] if failed else None
        row["status"] = failed[0]["status"] if failed else None
    return rows


def show_message(engine: Engine, reply_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = reply_for(conn, reply_id)
        letter = None
        if row["letter_id"]:
            letter = conn.execute(
                select(letter_table.c.reference, letter_table.c.state, letter_table.c.target_name).where(
                    letter_table.c.id == row["letter_id"]
                )
            ).first()
    row.pop("raw")
    with engine.connect() as conn:
        row["suggested_reference"] = (
            conn.execute(
                select(letter_table.c.reference).where(letter_table.c.id == row["suggested_letter_id"])
            ).scalar()
            if row["suggested_letter_id"]
            else None
        )
    row["reference"] = letter.reference if letter else None
    row["letter_state"] = letter.state if letter else None
    row["target_name"] = letter.target_name if letter else None
    return row


def raw_message(engine: Engine, reply_id: int) -> bytes:
    with engine.connect() as conn:
        return reply_for(conn, reply_id)["raw"]


def match_manually(engine: Engine, settings: Settings, reply_id: int, reference: str) -> dict[str, Any]:
    """Staff say which letter a message answers; it then counts as that letter's reply."""
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if reply["kind"] in ("bounce", "complaint"):
            raise CampaignError(f"message {reply_id} is a {reply['kind']}, not a reply: it cannot be matched")
        return _match(conn, settings, reply, letter_by_reference(conn, reference))


def _match(
    conn: Connection, settings: Settings, reply: dict[str, Any], letter: dict[str, Any]
) -> dict[str, Any]:
    now = utcnow()
    kind = "reply" if reply["kind"] == "unrelated" else reply["kind"]
    conn.execute(
        inbound_table.update()
        .where(inbound_table.c.id == reply["id"])
        .values(letter_id=letter["id"], match_method="staff", kind=kind, triage=None)
    )
    replied = follow_ups = 0
    if kind == "reply":
        replied = mark_replied(conn, letter, reply["authored_at"] or reply["received_at"], now)
        if replied and follow_up(conn, letter, reply["id"], settings, now):
            follow_ups = 1
    record_event(conn, "replies.match", reply=reply["id"], reference=letter["reference"])
    return {
        "reply": reply["id"],
        "reference": letter["reference"],
        "replied": bool(replied),
        "follow_up": bool(follow_ups),
    }


def accept_suggestion(engine: Engine, settings: Settings, reply_id: int) -> dict[str, Any]:
    """Staff confirm what the engine only suggested for a message in triage, and it is done:
    a reply counts for its suggested letter, a bounce marks its message bounced, a complaint
    suppresses the address complained about."""
    now = utcnow()
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if not reply["triage"]:
            raise CampaignError(f"message {reply_id} is not waiting for staff: nothing to accept")
        kind = reply["kind"]
        done: dict[str, Any] = {"reply": reply_id, "kind": kind, "suppressed": [], "bounced": 0}
        if kind in ("reply", "auto_reply", "unrelated"):
            if reply["suggested_letter_id"] is None:
                raise CampaignError(
                    f"message {reply_id} suggests no letter: say which with 'campaign replies match "
                    f"{reply_id} REFERENCE'"
                )
            letter = dict(
                conn.execute(select(letter_table).where(letter_table.c.id == reply["suggested_letter_id"]))
                .one()
                ._mapping
            )
            done.update(_match(conn, settings, reply, letter))
            record_event(conn, "replies.accept", reply=reply_id, kind=kind)
            return done
        elif kind == "bounce":
            classification = classify(parse(reply["raw"]))
            f = failure_table.c
            outbox_ids = set(
                conn.execute(
                    select(f.outbox_id).where(f.inbound_id == reply_id, f.outbox_id.is_not(None))
                ).scalars()
            )
            for outbox_id in outbox_ids:
                outbox = dict(
                    conn.execute(select(outbox_table).where(outbox_table.c.id == outbox_id)).one()._mapping
                )
                done["bounced"] += bounce_message(conn, outbox, classification, now)
        elif kind == "complaint":
            analysis = Ingester(engine, settings).analyse(conn, parse(reply["raw"]))
            if analysis.sent is not None:
                # The report may name both the letter's recipient and the member's copy: the recipient.
                addresses = [address_of(analysis.sent["to_addr"])]
            else:
                addresses = [failure.address for failure in analysis.classification.failed]
            if not addresses:
                raise CampaignError(f"message {reply_id} names no address to suppress: dismiss it instead")
            for address in addresses:
                if suppress_address(conn, address, "complaint (staff)", reply_id, now):
                    done["suppressed"].append(address.lower())
        letter_id = reply["suggested_letter_id"]
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id)
            .values(triage=None, letter_id=letter_id, match_method="staff" if letter_id else None)
        )
        record_event(conn, "replies.accept", reply=reply_id, kind=kind)
    return done


def dismiss(engine: Engine, reply_id: int) -> dict[str, Any]:
    """Staff looked at a message waiting for them and nothing is to be done about it."""
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if not reply["triage"] and (reply["letter_id"] or reply["kind"] not in ("reply", "unrelated")):
            raise CampaignError(f"message {reply_id} is not waiting for staff: nothing to dismiss")
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id)
            .values(triage=None, suggested_letter_id=None, match_method="dismissed")
        )
        record_event(conn, "replies.dismiss", reply=reply_id, reason=reply["triage"])
    return {"reply": reply_id, "dismissed": True}


def log_paper_reply(
    engine: Engine,
    settings: Settings,
    reference: str,
    received: datetime,
    *,
    author: str | None = None,
    scan: bytes | None = None,
    scan_name: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """A reply that came on paper: recorded against its letter, with the scan kept if given."""
    now = utcnow()
    digest = hashlib.sha256(
        b"\0".join(
            [
                reference.upper().encode(),
                received.isoformat().encode(),
                (author or "").encode(),
                scan or b"",
                (note or "").encode(),
            ]
        )
    ).hexdigest()
    with engine.begin() as conn:
        letter = letter_by_reference(conn, reference)
        key = f"paper:{digest}"
        existing = conn.execute(select(inbound_table.c.id).where(inbound_table.c.dedupe_key == key)).scalar()
        if existing is not None:
            return {"reply": existing, "reference": letter["reference"], "already": True, "follow_up": False}
        reply_id = conn.execute(
            inbound_table.insert().values(
                dedupe_key=key,
                source="paper",
                raw=scan or b"",
                size=len(scan or b""),
                received_at=received,
                ingested_at=now,
                from_addr=author or letter["target_name"],
                subject=f"Paper reply to {letter['reference']}",
                kind="reply",
                letter_id=letter["id"],
                match_method="paper",
                forwarded=False,
                author_name=author or letter["target_name"],
                authored_at=received,
                text=note,
                note=note,
                attachment_name=scan_name,
                suggested_outcome=suggest_outcome(note) if note else None,
            )
        ).inserted_primary_key[0]
        replied = mark_replied(conn, letter, received, now)
        drafted = bool(replied and follow_up(conn, letter, reply_id, settings, now))
        record_event(conn, "replies.log", reply=reply_id, reference=letter["reference"])
    return {"reply": reply_id, "reference": letter["reference"], "already": False, "follow_up": drafted}


def set_outcome(engine: Engine, reply_id: int, outcome: str) -> dict[str, Any]:
    """Staff's reading of what a reply means for the campaign; it replaces the suggestion."""
    from .outcomes import check_outcome

    outcome = check_outcome(outcome)
    with engine.begin() as conn:
        reply = reply_for(conn, reply_id)
        if reply["kind"] != "reply":
            raise CampaignError(f"message {reply_id} is a {reply['kind']}: only replies have an outcome")
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == reply_id)
            .values(outcome=outcome, outcome_at=utcnow())
        )
    return {"reply": reply_id, "outcome": outcome, "suggested": reply["suggested_outcome"]}
