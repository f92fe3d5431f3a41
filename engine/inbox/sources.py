"""Where incoming mail is read from: an IMAP folder, an mbox file, a Maildir, or .eml files.

Each source yields raw messages one at a time with a way to acknowledge
each, which the caller does only after the message is committed: on IMAP
that flags it (or moves it), so a run killed between the two reads the
message again next time and ingest's de-duplication records it once.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import re
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from engine.errors import CampaignError

Ack = Callable[[], None]


@dataclass
class Incoming:
    data: bytes
    ack: Ack | None = None
    label: str = ""  # where it came from, for messages about it


class MailSource(ABC):
    name: str = ""

    @abstractmethod
    def __iter__(self) -> Iterator[Incoming]: ...

    def close(self) -> None:  # noqa: B027  (most sources hold nothing open between messages)
        return None


class EmlSource(MailSource):
    """Files given one by one or as folders (every *.eml inside, sorted)."""

    def __init__(self, paths: list[str | Path]):
        self.files: list[Path] = []
        for given in paths:
            path = Path(given)
            if path.is_dir():
                self.files += sorted(p for p in path.rglob("*.eml") if p.is_file())
            elif path.is_file():
                self.files.append(path)
            else:
                raise CampaignError(f"{path}: no such file or folder")
        self.name = "eml"

    def __iter__(self) -> Iterator[Incoming]:
        for path in self.files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CampaignError(f"{path}: cannot read: {exc.strerror}") from None
            yield Incoming(data, label=str(path))


class MboxSource(MailSource):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CampaignError(f"{self.path}: no such mbox file")
        self.name = f"mbox:{self.path.name}"

    def __iter__(self) -> Iterator[Incoming]:
        box = mailbox.mbox(self.path, create=False)
        try:
            for number, key in enumerate(box.iterkeys(), 1):
                yield Incoming(box.get_bytes(key), label=f"{self.path} message {number}")
        finally:
            box.close()


class MaildirSource(MailSource):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "cur").is_dir() and not (self.path / "new").is_dir():
            raise CampaignError(f"{self.path}: not a Maildir (no cur/ or new/ folder)")
        self.name = f"maildir:{self.path.name}"

    def __iter__(self) -> Iterator[Incoming]:
        box = mailbox.Maildir(self.path, factory=None, create=False)
        for key in sorted(box.iterkeys()):
            try:
                data = box.get_bytes(key)
            except KeyError:  # taken away by a mail client meanwhile
                continue
            yield Incoming(data, label=f"{self.path} {key}")


# Flag kept on every message ingest has stored, so "new" means "not yet ingested",
# whatever a person reading the mailbox has opened. Servers that allow no keywords get \Seen.
INGESTED_KEYWORD = "$CampaignIngested"


@dataclass
class ImapLocation:
    secure: bool
    host: str
    port: int
    user: str
    password: str
    folder: str

    @property
    def display(self) -> str:
        scheme = "imaps" if self.secure else "imap"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.folder}"


def parse_imap_url(url: str, password: str | None = None) -> ImapLocation:
    """imaps://user[:password]@host[:port]/Folder; the password may come from IMAP_PASSWORD instead."""
    parts = urlsplit(url)
    if parts.scheme not in ("imaps", "imap"):
        raise CampaignError(f"--imap {url!r}: use imaps://user@host/Folder (or imap:// for STARTTLS)")
    if not parts.hostname or not parts.username:
        raise CampaignError("--imap: the URL needs a user and a host, as in imaps://user@host/INBOX")
    secure = parts.scheme == "imaps"
    try:
        port = parts.port or (993 if secure else 143)
    except ValueError:
        raise CampaignError(f"--imap: bad port in {url!r}") from None
    return ImapLocation(
        secure=secure,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password) if parts.password else (password or ""),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
    )


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSource(MailSource):
    """New messages in one IMAP folder, fetched one at a time and flagged (or moved) once stored."""

    def __init__(
        self,
        location: ImapLocation,
        *,
        move_to: str | None = None,
        ca_file: str | None = None,
        timeout: float = 60.0,
        batch: int = 25,
    ):
        self.location = location
        self.move_to = move_to
        self.ca_file = ca_file
        self.timeout = timeout
        self.batch = batch
        self.name = f"imap:{location.host}/{location.folder}"
        self.conn: imaplib.IMAP4 | None = None
        self.flag = "\\Seen"
        self.can_move = False

    def _connect(self) -> imaplib.IMAP4:
        loc = self.location
        context = ssl.create_default_context(cafile=self.ca_file)
        conn: imaplib.IMAP4 | None = None
        try:
            if loc.secure:
                conn = imaplib.IMAP4_SSL(loc.host, loc.port, ssl_context=context, timeout=self.timeout)
            else:
                conn = imaplib.IMAP4(loc.host, loc.port, timeout=self.timeout)
                conn.starttls(ssl_context=context)
            conn.login(loc.user, loc.password)
        except imaplib.IMAP4.error as exc:
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.shutdown()
            raise CampaignError(f"{loc.display}: the server refused: {_text(exc)}") from None
        except ssl.SSLError as exc:
            raise CampaignError(f"{loc.display}: TLS failed: {exc.reason or exc}") from None
        except (TimeoutError, OSError) as exc:
            raise CampaignError(f"{loc.display}: cannot connect: {exc}") from None
        return conn

    def __iter__(self) -> Iterator[Incoming]:
        conn = self.conn = self._connect()
        loc = self.location
        typ, _ = conn.select(_quoted(loc.folder))
        if typ != "OK":
            raise CampaignError(f"{loc.display}: no folder {loc.folder!r}")
        flags = " ".join(_text(f) for f in (conn.response("PERMANENTFLAGS")[1] or []) if f)
        if "\\*" in flags:
            self.flag = INGESTED_KEYWORD
        # The capabilities after login are the ones that count (MOVE is often only offered then).
        typ, data = conn.capability()
        capabilities = _text(data[0] if data else b"").upper().split() if typ == "OK" else []
        self.can_move = "MOVE" in capabilities or "MOVE" in conn.capabilities
        criteria = f"UNKEYWORD {INGESTED_KEYWORD}" if self.flag == INGESTED_KEYWORD else "UNSEEN"
        typ, found = conn.uid("SEARCH", None, criteria)  # type: ignore[arg-type]
        if typ != "OK":
            raise CampaignError(f"{loc.display}: search failed: {_text(found[0] if found else '')}")
        uids = _text(found[0] if found else b"").split()
        for start in range(0, len(uids), self.batch):
            chunk = uids[start : start + self.batch]
            typ, fetched = conn.uid("FETCH", ",".join(chunk), "(UID BODY.PEEK[])")
            if typ != "OK":
                raise CampaignError(f"{loc.display}: fetch failed")
            for uid, data in _fetched_messages(fetched):
                yield Incoming(data, ack=self._acker(uid), label=f"{loc.display} UID {uid}")

    def _acker(self, uid: str) -> Ack:
        def ack() -> None:
            conn = self.conn
            assert conn is not None
            if self.move_to:
                if self.can_move:
                    conn.uid("MOVE", uid, _quoted(self.move_to))
                else:
                    conn.uid("COPY", uid, _quoted(self.move_to))
                    conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
                    conn.expunge()
            else:
                conn.uid("STORE", uid, "+FLAGS.SILENT", f"({self.flag})")

        return ack

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.logout()
            except (imaplib.IMAP4.error, OSError, EOFError):
                with contextlib.suppress(OSError):
                    self.conn.shutdown()  # the line is gone: just let go of the socket
            self.conn = None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_UID = re.compile(rb"UID (\d+)")


def _fetched_messages(fetched: list) -> Iterator[tuple[str, bytes]]:
    """(uid, raw message) pairs from imaplib's FETCH answer."""
    for item in fetched:
        if isinstance(item, tuple) and len(item) == 2:
            found = _UID.search(item[0])
            if found:
                yield found.group(1).decode(), item[1]


# What a dropped or broken connection raises, mid-way through a folder.
CONNECTION_ERRORS = (imaplib.IMAP4.abort, OSError, EOFError, ssl.SSLError)
