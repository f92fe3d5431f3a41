"""The text of a reply sent as a document: employers often answer with a PDF or Word letter
attached to a one-line email ("Please find our response attached").

The text is read for matching and for the outcome suggestion; the document itself stays in the
stored raw message. A document is from outside and may be broken or built to hurt: each is
size-capped, page-capped and read with every error caught, and one that cannot be read is named
as such, never a reason to stop reading the message.
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from dataclasses import dataclass
from email.message import Message

from engine.inbox.classify import content_type

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_MAX_BYTES = 10 * 1024 * 1024
_MAX_PAGES = 20
_MAX_CHARS = 20_000
# A DOCX is a zip: refuse one whose parts would inflate far past any letter (a zip bomb).
_MAX_UNZIPPED = 50 * 1024 * 1024
# pypdf logs every oddity of a damaged file at WARNING: the reply is recorded either way.
logging.getLogger("pypdf").setLevel(logging.ERROR)


@dataclass
class Document:
    filename: str
    kind: str  # pdf | docx
    text: str  # "" when it could not be read
    problem: str | None = None


def _kind(part: Message) -> str | None:
    mime = content_type(part)
    name = (part.get_filename() or "").lower()
    if mime == PDF or (mime == "application/octet-stream" and name.endswith(".pdf")):
        return "pdf"
    if mime == DOCX or (
        mime in ("application/octet-stream", "application/msword") and name.endswith(".docx")
    ):
        return "docx"
    return None


def attached_documents(message: Message, limit: int = 5) -> list[Document]:
    """Every PDF and DOCX attached anywhere in the message (a forwarded message's included)."""
    found: list[Document] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = _kind(part)
        if kind is None:
            continue
        filename = " ".join((part.get_filename() or f"attachment.{kind}").split())[:200]
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:  # a broken transfer encoding
            data = b""
        if not isinstance(data, bytes) or not data:
            found.append(Document(filename, kind, "", "empty or unreadable encoding"))
        elif len(data) > _MAX_BYTES:
            found.append(
                Document(filename, kind, "", f"larger than {_MAX_BYTES // (1024 * 1024)} MB: not read")
            )
        else:
            found.append(_read(filename, kind, data))
        if len(found) >= limit:
            break
    return found


def _read(filename: str, kind: str, data: bytes) -> Document:
    # The libraries report a damaged file by warnings as well as exceptions.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            text = _pdf_text(data) if kind == "pdf" else _docx_text(data)
        except Exception as exc:  # any way a hostile or damaged file can fail
            return Document(filename, kind, "", f"could not be read ({type(exc).__name__})")
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()
    return Document(filename, kind, text[:_MAX_CHARS], None if text else "holds no text (a scan?)")


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader  # imported when a PDF arrives: most mail has none

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        reader.decrypt("")
    pages = []
    for page in reader.pages[:_MAX_PAGES]:
        pages.append(page.extract_text() or "")
        if sum(map(len, pages)) > _MAX_CHARS:
            break
    return "\n\n".join(pages)


def _docx_text(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if sum(info.file_size for info in archive.infolist()) > _MAX_UNZIPPED:
            raise ValueError("inflates too far")
    import docx  # python-docx

    document = docx.Document(io.BytesIO(data))
    paragraphs = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            paragraphs.append(" | ".join(cell.text for cell in row.cells))
    return "\n\n".join(paragraphs)
