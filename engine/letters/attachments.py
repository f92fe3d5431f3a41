"""Files attached to a wave: checked and stored when named, sent with its letters, printed after them.

An organiser names PDF or DOCX files with `wave create|edit --attach FILE`. Each
is judged by its content, not its name, size-checked against the settings, and
its bytes stored in the database there and then: what the letters carry is what
was read, whatever happens to the file afterwards. A launched wave cannot be
edited, so from launch on its attachments are frozen with its templates.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from engine import system
from engine.errors import CampaignError
from engine.settings import Settings
from engine.store.models import attachment_table, utcnow

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
KINDS = {PDF: ("PDF", ".pdf"), DOCX: ("DOCX", ".docx")}
MAX_NAME = 100


@dataclass(frozen=True)
class Attachment:
    filename: str
    media_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def kind(self) -> str:
        """PDF or DOCX, for people."""
        return KINDS[self.media_type][0]

    def describe(self) -> str:
        return f"{self.filename} ({self.kind}, {kb(self.size)})"


def kb(size: int) -> str:
    return f"{max(1, round(size / 1024)):,} KB"


def media_type_of(data: bytes) -> str | None:
    """PDF or DOCX by content: a PDF starts `%PDF-`; a DOCX is a zip holding word/document.xml.

    A renamed spreadsheet, an image or a macro-laden .docm with a .pdf name is none of these.
    """
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, ValueError):
            return None
        if "word/document.xml" in names and "word/vbaProject.bin" not in names:
            return DOCX
    return None


def safe_filename(name: str, media_type: str) -> str:
    """The file's own name, made fit for a mail header and any file system it is saved to:
    no folders, control characters or characters Windows refuses; the extension its content
    has (a PDF named `.docx` goes as `.pdf`); at most MAX_NAME characters."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(" " if unicodedata.category(ch).startswith(("C", "Z")) else ch for ch in name)
    name = re.sub(r'[<>:"|?*%;=]', "_", name)
    name = " ".join(name.split()).strip(" .")
    extension = KINDS[media_type][1]
    stem = name[: -len(extension)] if name.lower().endswith(extension) else name
    stem = stem.rstrip(" .")[: MAX_NAME - len(extension)].rstrip(" .") or "attachment"
    return stem + extension


def read_attachment(path: str | Path, settings: Settings) -> Attachment:
    """Read one file named by --attach, or refuse it in one line naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CampaignError(f"--attach: {path}: no such file") from None
    except IsADirectoryError:
        raise CampaignError(f"--attach: {path}: a folder, not a file") from None
    except OSError as exc:
        raise CampaignError(f"--attach: {path}: cannot read it ({exc.strerror})") from None
    media_type = media_type_of(data)
    if media_type is None:
        raise CampaignError(
            f"--attach: {path}: not a PDF or DOCX file (judged by its content, not its name); "
            "save it as PDF and attach that"
        )
    if len(data) > settings.attach_file_max_kb * 1024:
        raise CampaignError(
            f"--attach: {path}: {kb(len(data))}, more than the {settings.attach_file_max_kb:,} KB "
            "allowed for one file (CAMPAIGN_ATTACH_FILE_MAX_KB)"
        )
    problem = unreadable(data, media_type)
    if problem:
        raise CampaignError(f"--attach: {path}: {problem}")
    return Attachment(safe_filename(path.name, media_type), media_type, data)


def unreadable(data: bytes, media_type: str) -> str | None:
    """Why a file that looks like a PDF or DOCX could not be printed after a letter (damaged,
    or locked with a password), or None. Found now rather than in the middle of a print run."""
    try:
        if media_type == PDF:
            from pypdf import PdfReader

            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                return "the PDF is locked with a password; attach an unlocked copy"
            if not reader.pages:
                return "the PDF has no pages"
        else:
            import docx

            docx.Document(io.BytesIO(data))
    except Exception:  # pypdf, python-docx and lxml raise many kinds for a damaged file
        return f"a damaged {KINDS[media_type][0]} file: it cannot be read"
    return None


def wave_attachments(conn: Connection, wave_id: int | None) -> list[Attachment]:
    """A wave's attachments, in the order they go in a letter."""
    if wave_id is None:
        return []
    a = attachment_table.c
    rows = conn.execute(
        select(a.filename, a.media_type, a.data).where(a.wave_id == wave_id).order_by(a.position)
    )
    return [Attachment(row.filename, row.media_type, bytes(row.data)) for row in rows]


def attachment_list(conn: Connection, wave_id: int) -> list[dict[str, Any]]:
    """What `wave show` lists: name, type, size and hash of each attachment (not the bytes)."""
    a = attachment_table.c
    rows = conn.execute(
        select(a.filename, a.media_type, a.size, a.sha256).where(a.wave_id == wave_id).order_by(a.position)
    )
    return [
        {"name": r.filename, "type": KINDS[r.media_type][0], "size": r.size, "sha256": r.sha256} for r in rows
    ]


def planned_attachments(
    conn: Connection | None,
    wave_id: int | None,
    attach: list[str] | None,
    detach: list[str] | None,
    settings: Settings,
) -> tuple[list[Attachment], list[str]] | None:
    """Read the files to attach and check the wave's attachments as they would then be, before
    anything is stored: (files to add or replace, names to remove), or None when neither was given.

    A file whose name is attached already replaces it (the organiser has a new version).
    """
    if not attach and not detach:
        return None
    current = wave_attachments(conn, wave_id) if conn is not None else []
    names = {a.filename for a in current}
    for name in detach or ():
        if name not in names:
            listed = ", ".join(sorted(names)) or "none"
            raise CampaignError(f"--detach: the wave has no attachment {name!r} (it has: {listed})")
    added: dict[str, Attachment] = {}
    for path in attach or ():
        attachment = read_attachment(path, settings)
        added[attachment.filename] = attachment
    kept = [a for a in current if a.filename not in set(detach or ()) and a.filename not in added]
    total = sum(a.size for a in kept) + sum(a.size for a in added.values())
    if total > settings.attach_max_kb * 1024:
        biggest = max(added.values(), key=lambda a: a.size, default=None)
        named = f" {biggest.filename}:" if biggest else ""
        raise CampaignError(
            f"--attach:{named} the wave's attachments would come to {kb(total)}, more than the "
            f"{settings.attach_max_kb:,} KB a wave may carry (CAMPAIGN_ATTACH_MAX_KB); nothing was stored"
        )
    return list(added.values()), list(detach or ())


def store_attachments(
    conn: Connection, wave_id: int, plan: tuple[list[Attachment], list[str]] | None
) -> dict[str, Any]:
    """Apply `planned_attachments` in the caller's transaction; returns what changed, for the
    event log (names and hashes: what each letter will carry can be traced to a file)."""
    if plan is None:
        return {}
    added, detached = plan
    a = attachment_table.c
    gone = [*detached, *(x.filename for x in added)]
    if gone:
        conn.execute(attachment_table.delete().where(a.wave_id == wave_id, a.filename.in_(gone)))
    position = conn.execute(select(func.max(a.position)).where(a.wave_id == wave_id)).scalar() or 0
    now = utcnow()
    for i, attachment in enumerate(added, start=position + 1):
        conn.execute(
            attachment_table.insert().values(
                wave_id=wave_id,
                position=i,
                filename=attachment.filename,
                media_type=attachment.media_type,
                size=attachment.size,
                sha256=attachment.sha256,
                data=attachment.data,
                added_at=now,
            )
        )
    return {
        "attached": [f"{attachment.filename} sha256:{attachment.sha256}" for attachment in added],
        "detached": detached,
    }


def carries_attachments(letter: dict[str, Any]) -> bool:
    """Whether a letter goes with its wave's attachments: first letters do. A follow-up answers
    a reply and a chaser asks again about the letter that carried them; their templates do not
    speak of them, so they go without."""
    return letter.get("kind", "letter") == "letter"


def attachments_pdf(attachments: list[Attachment]) -> bytes | None:
    """Every attachment's pages in one PDF, to print after a letter: a PDF's own pages, and a
    DOCX's text laid out on A4 like the letters. None when there are none."""
    if not attachments:
        return None
    from pypdf import PdfWriter  # loaded here: only printing needs it

    writer = PdfWriter()
    for attachment in attachments:
        data = attachment.data if attachment.media_type == PDF else docx_pdf(attachment)
        try:
            writer.append(io.BytesIO(data))
        except Exception as exc:  # pypdf raises many kinds; checked at --attach, so rare
            raise CampaignError(f"attachment {attachment.filename}: cannot be printed ({exc})") from None
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# The letter layout's page and type (templates/letters/layout.html), so an attached document
# prints like the letter it follows; the running head names it on every page.
_DOCX_CSS = """
@page { size: A4; margin: 16mm 20mm 16mm 22mm;
  @top-left { content: "{name}"; font: 8.5pt "DejaVu Serif", serif; color: #555555; }
  @top-right { content: "Page " counter(page); font: 8.5pt "DejaVu Serif", serif; color: #555555; } }
body { font-family: "DejaVu Serif", "Noto Serif", Georgia, serif; font-size: 10.5pt; line-height: 1.4;
  color: #1a1a1a; margin: 0; }
p { margin: 0 0 8px 0; }
h1, h2, h3, h4 { font-size: 12pt; margin: 12px 0 6px 0; break-after: avoid; }
h1 { font-size: 14pt; }
ul, ol { padding-left: 7mm; margin: 0 0 8px 0; }
table { border-collapse: collapse; width: 100%; margin: 0 0 10px 0; font-size: 9.5pt; }
td { border: 0.5pt solid #888888; padding: 3px 5px; vertical-align: top; }
"""


def docx_html(attachment: Attachment) -> str:
    """A DOCX's text as a plain HTML document: headings, paragraphs, lists, tables, bold and
    italic. Pictures, text boxes, headers and footers are left out: what prints is its words."""
    import docx  # loaded here: only printing a DOCX needs it
    from docx.table import Table
    from markupsafe import escape

    try:
        document = docx.Document(io.BytesIO(attachment.data))
    except Exception as exc:  # a damaged file: python-docx and lxml raise many kinds
        raise CampaignError(f"attachment {attachment.filename}: cannot be read as DOCX ({exc})") from None

    def runs(paragraph: Any) -> str:
        html = []
        for run in paragraph.runs:
            text = str(escape(run.text)).replace("\n", "<br>")
            if run.bold:
                text = f"<strong>{text}</strong>"
            if run.italic:
                text = f"<em>{text}</em>"
            html.append(text)
        return "".join(html) or str(escape(paragraph.text))

    blocks: list[str] = []
    open_list: str | None = None
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = "".join(
                "<tr>" + "".join(f"<td>{escape(cell.text)}</td>" for cell in row.cells) + "</tr>"
                for row in item.rows
            )
            tag, html = None, f"<table>{rows}</table>"
        else:
            style = (item.style.name if item.style is not None else "") or ""
            heading = re.fullmatch(r"(?:Heading|Title)\s*(\d?)", style)
            if heading:
                level = min(int(heading.group(1) or 1), 4)
                tag, html = None, f"<h{level}>{runs(item)}</h{level}>"
            elif style.startswith("List"):
                tag, html = ("ol" if "Number" in style else "ul"), f"<li>{runs(item)}</li>"
            elif item.text.strip():
                tag, html = None, f"<p>{runs(item)}</p>"
            else:
                continue
        if open_list and tag != open_list:
            blocks.append(f"</{open_list}>")
            open_list = None
        if tag and tag != open_list:
            blocks.append(f"<{tag}>")
            open_list = tag
        blocks.append(html)
    if open_list:
        blocks.append(f"</{open_list}>")
    # safe_filename leaves no quote, backslash or angle bracket that could end the string or style.
    css = _DOCX_CSS.replace("{name}", attachment.filename)
    return (
        f'<!DOCTYPE html><html lang="en-GB"><head><meta charset="utf-8"><title>{escape(attachment.filename)}'
        f"</title><style>{css}</style></head><body>{''.join(blocks)}</body></html>"
    )


def docx_pdf(attachment: Attachment) -> bytes:
    """A DOCX attachment printed on A4 (docx_html rendered with WeasyPrint)."""
    return system.weasyprint().HTML(string=docx_html(attachment)).write_pdf()
