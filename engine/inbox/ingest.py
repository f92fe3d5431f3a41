"""Incoming mail, one message at a time: store it raw, read it (inbox.match), act on it (inbox.act).

Each message is stored and acted on in one transaction, so a run stopped at
any moment has either done all of a message or none of it; a message seen
again (same Message-ID, or same bytes when it has none) is recorded once.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from engine.errors import failure_text
from engine.inbox.act import act, acts_on
from engine.inbox.classify import parse
from engine.inbox.forwards import parse_date
from engine.inbox.match import MESSAGE_ID, Analysis, Matcher, header_value
from engine.inbox.outcomes import suggest_outcome
from engine.inbox.sources import CONNECTION_ERRORS, MailSource
from engine.settings import Settings
from engine.store.db import FastInsert, FastQuery, without_nul
from engine.store.models import (
    inbound_table,
    utcnow,
)

# Kept text of one reply: enough for any letter's reply, bounded against a pasted novel.
_TEXT_LIMIT = 100_000
# Built once: building a statement costs more than SQLite takes to run it.
_STORED = select(inbound_table.c.id).where(inbound_table.c.dedupe_key == bindparam("key"))
_INSERT = inbound_table.insert()


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
    members_unreachable: int = 0
    addresses_suppressed: int = 0
    follow_ups: int = 0
    triaged: int = 0
    not_stored: int = 0
    interrupted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["kinds"] = dict(self.kinds)
        return data


def dedupe_key(message: Message | None, data: bytes) -> tuple[str, str | None]:
    """What makes two copies the same message: its Message-ID, or its bytes when it has none.

    The Message-ID is taken with the sender, date and subject, which every copy of a
    message shares (its Received lines differ): a careless sender reusing one ID for
    different messages must not make us drop the second.
    """
    message_id = None
    if message is not None:
        found = MESSAGE_ID.search(header_value(message, "Message-ID"))
        message_id = f"<{found.group(1)}>" if found else None
    if message_id and message is not None:
        same = "\0".join([message_id, *(header_value(message, h) for h in ("From", "Date", "Subject"))])
        digest = hashlib.sha256(same.encode("utf-8", "replace")).hexdigest()[:16]
        return f"mid:{message_id[:200]}#{digest}", message_id[:998]
    return f"sha256:{hashlib.sha256(data).hexdigest()}", message_id


class Ingester:
    """Records messages one by one: store the raw message (`store_raw`), read it, act on it."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.matcher = Matcher(settings)
        self.stored = FastQuery(_STORED, engine.dialect)
        self.insert = FastInsert(inbound_table, engine.dialect)

    def analyse(self, conn: Connection, message: Message) -> Analysis:
        """What the message is and which letter it is about (inbox.match)."""
        return self.matcher.analyse(conn, message)

    def act(
        self, conn: Connection, inbound_id: int, analysis: Analysis, result: IngestResult, now: datetime
    ) -> None:
        """Do what the analysis proves (inbox.act), counted in `result`."""
        done = act(conn, inbound_id, analysis, self.matcher, self.settings, now)
        for name, count in done.__dict__.items():
            setattr(result, name, getattr(result, name) + count)

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
            if self.stored.rows(conn, key=key):
                result.duplicates += 1
                return None
            analysis = None
            if message is not None:
                problem = _defects(message)
                try:
                    with statement_guard(conn):  # it only reads
                        analysis = self.analyse(conn, message)
                except Exception as exc:  # kept and listed, never dropped
                    problem = f"cannot read: {failure_text(exc)}"
            row = message_row(data, source, message, message_id, key, analysis, problem, now)
            inbound_id = store_raw(conn, row, key, self.insert)
            if inbound_id is None:
                result.duplicates += 1
                return None
            result.kinds[row["kind"]] += 1
            result.stored += 1
            problem = row["problem"]
            if problem:
                result.problems.append(f"message {inbound_id} ({source}): {problem}")
            if analysis is not None and row["kind"] == analysis.kind and acts_on(analysis):
                try:
                    with act_guard(conn):
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


@contextlib.contextmanager
def statement_guard(conn: Connection) -> Iterator[None]:
    """What keeps the transaction usable when the statements inside fail: on PostgreSQL a
    savepoint, as one failed statement spoils the whole transaction there; SQLite undoes only
    the failed statement itself, so a block that writes at most once needs nothing there."""
    if conn.dialect.name == "sqlite":
        yield
    else:
        with conn.begin_nested():
            yield


@contextlib.contextmanager
def act_guard(conn: Connection) -> Iterator[None]:
    """A savepoint, so that acting on a message undoes all its writes when it fails and the
    message stays stored. On SQLite set straight on the driver: SQLAlchemy's own savepoint
    cost more than the writes it guards (the same SQL, inside the message's transaction)."""
    if conn.dialect.name != "sqlite":
        with conn.begin_nested():
            yield
        return
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SAVEPOINT act")
        try:
            yield
        except BaseException:
            cursor.execute("ROLLBACK TO SAVEPOINT act")
            cursor.execute("RELEASE SAVEPOINT act")
            raise
        cursor.execute("RELEASE SAVEPOINT act")
    finally:
        cursor.close()


def store_raw(
    conn: Connection, row: dict[str, Any], key: str, insert: FastInsert | None = None
) -> int | None:
    """The stored row's id; None when another run stored the same message a moment ago.

    A message the database will not take as read (a byte it refuses, a value out of
    range) is stored raw with the reason instead, so that it never stops the rest.
    """
    try:
        with statement_guard(conn):
            if insert is not None:
                return insert.insert(conn, row)
            return conn.execute(_INSERT, row).inserted_primary_key[0]
    except IntegrityError:
        if conn.execute(_STORED, {"key": key}).first():
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


def message_row(
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
            received = parse_date(header_value(message, "Date")) or now
        except (ValueError, OverflowError, TypeError):  # a date no parser can place
            received = now
        from_addr = header_value(message, "From")[:500] or None
        subject = header_value(message, "Subject")[:500] or None
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
            attachment_name=", ".join(d.filename for d in analysis.documents)[:500] or None,
        )
        if analysis.kind == "reply" and analysis.text:
            row["suggested_outcome"] = suggest_outcome(analysis.text)
    return without_nul(row)


# -- whole sources ----------------------------------------------------------
