"""Reading letters back: listing them and building each one's printable HTML and PDF."""

from __future__ import annotations

import copy
import html
import io
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import escape
from sqlalchemy import Engine, select

from engine import system
from engine.errors import CampaignError
from engine.letters.attachments import attachments_pdf, carries_attachments, wave_attachments
from engine.letters.merge import letter_words, member_from_snapshot, sharing_context
from engine.letters.processes import exit_with_parent, idle_core
from engine.letters.render import WaveRenderer
from engine.store.files import make_folder, write_atomically
from engine.store.models import LETTER_STATES, letter_table, member_table, wave_table


def iter_letters(
    engine: Engine, *, wave: str | None = None, state: str | None = None, kind: str | None = None
) -> Iterator[dict[str, Any]]:
    """Letters with their reference, member, target, state and subject, streamed in creation order."""
    lt, m, w = letter_table.c, member_table.c, wave_table.c
    if state is not None and state not in LETTER_STATES:
        raise CampaignError(f"--state: {state!r} is not one of {', '.join(LETTER_STATES)}")
    stmt = (
        select(
            lt.id,
            lt.reference,
            w.name.label("wave"),
            m.membership_no,
            (m.first_name + " " + m.last_name).label("member"),
            lt.target_name,
            lt.target_email,
            lt.state,
            lt.kind,
            lt.subject,
        )
        .select_from(
            letter_table.join(member_table, m.id == lt.member_id).join(wave_table, w.id == lt.wave_id)
        )
        .order_by(lt.id)
    )
    if wave is not None:
        with engine.connect() as conn:
            if conn.execute(select(w.id).where(w.name == wave)).first() is None:
                raise CampaignError(f"no wave named {wave!r} (see `campaign wave list`)")
        stmt = stmt.where(w.name == wave)
    if state is not None:
        stmt = stmt.where(lt.state == state)
    if kind is not None:
        stmt = stmt.where(lt.kind == kind)
    last_id = 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(stmt.where(lt.id > last_id).limit(1000)).all()
            if not rows:
                return
            for row in rows:
                data = dict(row._mapping)
                last_id = data.pop("id")
                yield data


def letter_document(letter: dict[str, Any], renderer: WaveRenderer) -> str:
    """The whole letter as an HTML document: address block, date, recipient, body, reference."""
    snapshot = letter["merge_snapshot"]
    body_html = letter_html(letter, renderer)
    return renderer.layout.render(
        letter={
            "reference": letter["reference"],
            "date": snapshot["date"],
            **sharing_context(snapshot),
            "subject": letter["subject"],
            # A letter that quotes its reference ("please quote …") needs it printed no second time.
            "reference_in_text": letter["reference"] in body_html,
        },
        member=_with_address(
            member_from_snapshot(snapshot["member"], renderer.frozen.get("custom_fields") or ()),
            letter.get("sender_address"),
        ),
        target={
            "name": letter["target_name"],
            "address": letter["target_address"],
            "salutation": letter["target_salutation"],
            "email": letter["target_email"],
            "kind": letter["target_kind"],
        },
        body_html=body_html,
    )


def _with_address(member: dict[str, Any], address: str | None) -> dict[str, Any]:
    return {**member, "address": address} if address else member


def letter_html(letter: dict[str, Any], renderer: WaveRenderer) -> str:
    """The letter's body as HTML, derived from its frozen text: paragraphs, lists, the sign-off."""
    return body_html(letter_words(letter), renderer.paragraph_style)


# A list item: a line starting with a hyphen, an asterisk or a bullet, then a space.
_ITEM = re.compile(r"[ \t]*[-*\u2022\u2013][ \t]+(?=\S)")
# The closing of a letter, on a line of its own ("Yours sincerely,", "With best wishes").
_CLOSING = re.compile(
    r"(yours(\s+(sincerely|faithfully|truly|ever))?|sincerely(\s+yours)?|(with\s+)?(best|kind|warm|warmest)"
    r"\s+(wishes|regards)|(many\s+)?thanks|regards|best|thank\s+you)[,.!]?",
    re.I,
)
# What keeps the sign-off whole and with the text before it on paper; emails ignore it.
_KEEP_TOGETHER = (
    "break-inside: avoid; page-break-inside: avoid; break-before: avoid; page-break-before: avoid"
)


def body_html(text: str, paragraph_style: str = "") -> str:
    """Plain letter text as escaped HTML: paragraphs, real lists for lines that start with a
    hyphen or a bullet, and the closing with the name after it kept together as the sign-off,
    with room between them for a handwritten signature."""
    opening = f'<p style="{escape(paragraph_style)}">' if paragraph_style else "<p>"
    escaped = str(escape(text.strip()))
    blocks = [block.split("\n") for block in _PARAGRAPH_BREAK.split(escaped) if block.strip()]
    closing = next(
        (i for i in range(len(blocks) - 1, -1, -1) if _CLOSING.fullmatch(blocks[i][0].strip())), None
    )
    body = blocks if closing is None else blocks[:closing]
    html = [_block_html(lines, opening, paragraph_style) for lines in body]
    if closing is not None:
        close_lines = blocks[closing]
        names = close_lines[1:] + [line for block in blocks[closing + 1 :] for line in block]
        signature = "<br>\n".join(line.strip() for line in names if line.strip())
        html.append(
            f'<div class="signoff" style="{_KEEP_TOGETHER}">\n'
            f"{opening}{close_lines[0].strip()}</p>\n"
            '<div class="signature-space"></div>\n'
            + (f"{opening}{signature}</p>\n" if signature else "")
            + "</div>"
        )
    return "\n".join(html)


def _block_html(lines: list[str], opening: str, paragraph_style: str) -> str:
    """One paragraph of the text: its plain lines as paragraphs, its list lines as a list."""
    parts: list[str] = []
    plain: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if plain:
            parts.append(opening + "<br>\n".join(plain) + "</p>")
            plain.clear()
        if items:
            style = f' style="{escape(paragraph_style)}"' if paragraph_style else ""
            parts.append(f'<ul class="points"{style}>' + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()

    for line in lines:
        item = _ITEM.match(line)
        if item:
            if plain:
                flush()
            items.append(line[item.end() :].strip())
        elif items and line[:1] in (" ", "\t") and line.strip():
            items[-1] += " " + line.strip()  # an item's indented second line
        else:
            if items:
                flush()
            plain.append(line)
    flush()
    return "\n".join(parts)


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.S | re.I)


def render_pdf(documents: list[str], appended: bytes | None = None) -> tuple[bytes, int]:
    """Render letter documents (same layout) into one PDF, each letter from a new page;
    returns the PDF and its number of pages. `appended` (a PDF: the wave's attachments) is
    put after each letter's own pages."""
    [printed] = print_letters(documents, [appended is not None] * len(documents), appended)
    return printed


def print_letters(
    documents: list[str],
    carries: list[bool],
    appended: bytes | None,
    *,
    one_per_letter: bool = False,
    font_config: Any = None,
) -> list[tuple[bytes, int]]:
    """Letter documents (same layout) as one PDF, or with `one_per_letter` one PDF each, with
    `appended` after each letter whose `carries` is true; each PDF with its number of pages.
    `font_config`: WeasyPrint's FontConfiguration, shared by the documents of a run so fonts
    are loaded once."""
    if (
        one_per_letter
        and len(documents) > 1
        and len({_TITLE.sub("", d.split("<body", 1)[0]) for d in documents}) > 1
    ):
        # Letters whose heads differ by more than their titles are laid out apart.
        return [
            print_letters([document], [carry], appended, font_config=font_config)[0]
            for document, carry in zip(documents, carries, strict=True)
        ]
    rendered, starts = _render(documents, font_config)
    ends = [*starts[1:], len(rendered.pages)]
    if not one_per_letter or len(documents) == 1:
        data = rendered.write_pdf()
        if appended is None or not any(carries):
            return [(data, len(rendered.pages))]
        return [append_after_each(data, starts, appended, carries)]
    printed = []
    for document, start, end, carry in zip(documents, starts, ends, carries, strict=True):
        # Laid out together (setting up a document costs more than laying out a letter) and
        # written apart: each file holds its letter's pages, its title, and only the glyphs
        # of the fonts it uses.
        part = rendered.copy(rendered.pages[start:end])
        part.metadata = copy.copy(rendered.metadata)
        title = _TITLE.search(document)
        part.metadata.title = html.unescape(title.group(1)) if title else None
        data = part.write_pdf()
        printed.append(append_after_each(data, [0], appended) if appended and carry else (data, end - start))
    return printed


def _render(documents: list[str], font_config: Any = None) -> tuple[Any, list[int]]:
    """Letter documents (same layout) laid out by WeasyPrint as one document, each letter from
    a new page; and the page each letter starts on."""
    # Loaded here: it loads Pango, which most commands never need.
    HTML = system.weasyprint().HTML  # noqa: N806

    if len(documents) == 1:
        return HTML(string=documents[0]).render(font_config=font_config), [0]
    # One document with page breaks renders several times faster than one per letter. The
    # layout's named page starts a page group at each forced break, so page numbers and the
    # first-page look restart with each letter.
    head = documents[0].split("<body", 1)[0]
    bodies = []
    for i, document in enumerate(documents):
        match = _BODY.search(document)
        inner = match.group(1) if match else document
        brk = ' style="page-break-after: always"' if i < len(documents) - 1 else ""
        bodies.append(f'<section id="printed-letter-{i}"{brk}>{inner}</section>')
    rendered = HTML(string=f"{head}<body>{''.join(bodies)}</body></html>").render(font_config=font_config)
    return rendered, _letter_starts(rendered.pages, len(documents))


def _letter_starts(pages: list[Any], letters: int) -> list[int]:
    """The page each letter of a combined render starts on, found by its section's anchor."""
    starts: dict[int, int] = {}
    for number, page in enumerate(pages):
        for anchor in page.anchors:
            if anchor.startswith("printed-letter-"):
                starts.setdefault(int(anchor.rsplit("-", 1)[1]), number)
    return [starts[i] for i in range(letters)]


def append_after_each(
    letters_pdf: bytes, starts: list[int], appended: bytes, carries: list[bool] | None = None
) -> tuple[bytes, int]:
    """The letters' PDF with `appended` after each letter (each starting at a page in `starts`;
    with `carries`, only after those it marks); returns the PDF and its number of pages. The
    appended pages' fonts and images are written once and shared by every copy."""
    from pypdf import PdfReader, PdfWriter  # loaded here: only print runs with attachments need it

    letters = PdfReader(io.BytesIO(letters_pdf))
    extra = PdfReader(io.BytesIO(appended))
    writer = PdfWriter()
    ends = [*starts[1:], len(letters.pages)]
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        for number in range(start, end):
            writer.add_page(letters.pages[number])
        if carries is None or carries[i]:
            for page in extra.pages:
                writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue(), len(writer.pages)


def pdf_bytes(documents: list[str], appended: bytes | None = None) -> bytes:
    """Render letter documents (same layout) into one PDF, a new page for each letter, with
    `appended` (the wave's attachments_pdf) after each."""
    return render_pdf(documents, appended)[0]


def wave_attachments_pdf(engine: Engine, wave_id: int | None) -> bytes | None:
    """A wave's attachments as the pages printed after each of its first letters, or None."""
    with engine.connect() as conn:
        return attachments_pdf(wave_attachments(conn, wave_id))


# Why a letter is left out of a print run, by its state: (key for --json, words for people).
_LEFT_OUT = {
    "drafted": ("not_confirmed", "not yet confirmed"),
    "invited": ("not_confirmed", "not yet confirmed"),
    "opted_out": ("opted_out", "opted out"),
    "confirmed": ("to_go_by_email", "waiting to go by email"),
    "queued": ("to_go_by_email", "waiting to go by email"),
    "sent": ("sent_by_email", "sent by email"),
    "replied": ("sent_by_email", "sent by email"),
    "followed_up": ("sent_by_email", "sent by email"),
    "overdue": ("sent_by_email", "sent by email"),
    "bounced": ("undelivered", "undelivered by email"),
    "failed": ("undelivered", "undelivered by email"),
    "self_sent": ("self_sent", "sent by the member themselves"),
    # The member's invitation bounced (a state another branch adds): the letter never went.
    "unreachable": ("member_unreachable", "member unreachable"),
}
LEFT_OUT_WORDS = dict(_LEFT_OUT.values()) | {
    "due_on_paper": "due on paper",
    "over_limit": "over --limit",
}


def due_on_paper(state: str, target_email: str | None) -> bool:
    """Whether a letter goes on paper: the member chose to send it themselves (a print run
    serves those without a printer, and the record), or confirmed it and its recipient has no
    email address, so only the post reaches them. Every other letter has gone or will go by
    email, or the member has not yet made it theirs."""
    return state == "self_sent" or (state in ("confirmed", "queued") and not target_email)


def _left_out_reason(state: str, target_email: str | None) -> str:
    if due_on_paper(state, target_email):
        return "due_on_paper"
    # A state added later is still counted, under its own name.
    return _LEFT_OUT.get(state, (state, state))[0]


@dataclass
class PrintRun:
    """What `write_wave_pdfs` printed, and what it left out and why."""

    wave: str
    files: list[Path] = field(default_factory=list)
    letters: int = 0
    pages: int = 0
    states: list[str] | None = None  # None: the letters due on paper
    left_out: dict[str, int] = field(default_factory=dict)  # reason key → letters

    def as_dict(self) -> dict[str, Any]:
        return {
            "wave": self.wave,
            "files": [str(path) for path in self.files],
            "letters": self.letters,
            "pages": self.pages,
            "selected": self.states or "due_on_paper",
            "left_out": sum(self.left_out.values()),
            "left_out_by_reason": dict(self.left_out),
        }


def write_wave_pdfs(
    engine: Engine,
    wave_name: str,
    out_dir: str | Path,
    *,
    combined: bool = False,
    states: list[str] | None = None,
    limit: int | None = None,
    references: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    parallel: bool | None = None,
) -> PrintRun:
    """PDFs of a launched wave's letters, one per letter or, for a print run with `combined`,
    one per 200 or fewer (shared out evenly): the letters due on paper, or those in `states`
    ("all": every letter). Says what it left out and why.

    With `parallel` (by default for large runs when a core is idle) worker processes print some
    of the files while this one prints others. (The workers are spawned: a script that calls
    this must guard its own code with `if __name__ == "__main__":`.)"""
    for state in states or ():
        if state not in (*LETTER_STATES, "all"):
            raise CampaignError(f"--state: {state!r} is not one of {', '.join(LETTER_STATES)}")
    out = make_folder(out_dir)
    lt, w = letter_table.c, wave_table.c
    with engine.connect() as conn:
        wave = conn.execute(select(wave_table).where(w.name == wave_name)).first()
        if wave is None:
            raise CampaignError(f"no wave named {wave_name!r} (see `campaign wave list`)")
        wave = dict(wave._mapping)
        if wave["status"] != "launched":
            raise CampaignError(
                f"wave {wave_name!r} is not launched yet: use `campaign wave preview --out FILE.pdf`"
            )
        stmt = select(lt.id, lt.reference, lt.state, lt.target_email).where(lt.wave_id == wave["id"])
        if references:
            stmt = stmt.where(lt.reference.in_(references))
        rows = conn.execute(stmt.order_by(lt.id)).all()
    if references:
        missing = sorted(set(references) - {row.reference for row in rows})
        if missing:
            raise CampaignError(f"--ref: wave {wave_name!r} has no letter {', '.join(missing)}")
    run = PrintRun(wave_name, states=list(dict.fromkeys(states)) if states else None)
    chosen: list[int] = []
    for row in rows:
        if states:
            wanted = "all" in states or row.state in states
        else:
            wanted = due_on_paper(row.state, row.target_email)
        if wanted and limit is not None and len(chosen) >= limit:
            reason = "over_limit"
        elif wanted:
            chosen.append(row.id)
            continue
        else:
            reason = _left_out_reason(row.state, row.target_email)
        run.left_out[reason] = run.left_out.get(reason, 0) + 1
    if on_start is not None:
        on_start(len(chosen))
    renderer = WaveRenderer(wave["frozen"])
    # Rendered once for the run, and put after every first letter (attachments.carries_attachments).
    appended = wave_attachments_pdf(engine, wave["id"])
    jobs = _print_jobs(chosen, combined)
    if parallel is None:
        parallel = len(chosen) >= _PARALLEL_FROM and idle_core()
    workers = min(_WORKERS, (os.cpu_count() or 1) - 1) if parallel else 0
    workers = min(workers, len(jobs) - 1)
    with ExitStack() as stack:
        pool = None
        if workers > 0:
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_print_worker,
                initargs=(os.getpid(), appended),
            )
            # On a failure, the jobs not yet started are dropped rather than printed.
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        font_config = None
        # Jobs in order, done or in a worker; each is written once those before it are.
        in_flight: deque[tuple[list[Path], int, Future[list[tuple[bytes, int]]]]] = deque()
        for number, ids in enumerate(jobs, 1):
            # A job's letters are read when it is handed out, which bounds the memory used.
            letters = _letters_by_id(engine, ids)
            if combined:
                suffix = f"-{number:03d}" if len(jobs) > 1 else ""
                paths = [out / f"{_slug(wave_name)}-letters{suffix}.pdf"]
            else:
                paths = [out / f"{letter['reference']}.pdf" for letter in letters]
            documents = [letter_document(letter, renderer) for letter in letters]
            carries = [appended is not None and carries_attachments(letter) for letter in letters]
            busy = sum(1 for _, _, job in in_flight if not job.done())
            if pool is not None and busy < workers:
                job = pool.submit(_print_in_worker, documents, carries, not combined)
            else:
                # Every worker is busy: this process prints the job itself.
                if font_config is None:
                    font_config = system.weasyprint().text.fonts.FontConfiguration()
                job = Future()
                job.set_result(
                    print_letters(
                        documents, carries, appended, one_per_letter=not combined, font_config=font_config
                    )
                )
            in_flight.append((paths, len(letters), job))
            while in_flight and in_flight[0][2].done():
                _write_printed(run, *in_flight.popleft(), progress)
        while in_flight:
            _write_printed(run, *in_flight.popleft(), progress)
    return run


# A print run's files hold at most this many letters, shared out evenly; letters printed one
# per file are laid out up to this many at a time. Either way it bounds a job's memory.
_FILE_LETTERS = 200
_SINGLE_LETTERS = 50
# A run this large is printed by this process and worker processes together, one job each at
# a time, when a core is idle: a worker's start-up (about 1.5 s of CPU, loading
# WeasyPrint and this package) is not worth it for fewer letters.
_PARALLEL_FROM = 100
_WORKERS = 3
_worker_appended: bytes | None = None
_worker_font_config: Any = None


def _print_jobs(ids: list[int], combined: bool) -> list[list[int]]:
    """The chosen letters shared into jobs: one per file of a print run, or runs of letters
    printed one per file, the same size give or take one so that processes finish together."""
    if not ids:
        return []
    size = _FILE_LETTERS if combined else min(_SINGLE_LETTERS, -(-len(ids) // (_WORKERS + 1)))
    count = -(-len(ids) // size)
    step, extra = divmod(len(ids), count)
    jobs, start = [], 0
    for number in range(count):
        end = start + step + (1 if number < extra else 0)
        jobs.append(ids[start:end])
        start = end
    return jobs


def _start_print_worker(parent_pid: int, appended: bytes | None) -> None:
    global _worker_appended, _worker_font_config
    exit_with_parent(parent_pid)
    _worker_appended = appended
    _worker_font_config = system.weasyprint().text.fonts.FontConfiguration()


def _print_in_worker(
    documents: list[str], carries: list[bool], one_per_letter: bool
) -> list[tuple[bytes, int]]:
    return print_letters(
        documents, carries, _worker_appended, one_per_letter=one_per_letter, font_config=_worker_font_config
    )


def _write_printed(
    run: PrintRun,
    paths: list[Path],
    letters: int,
    job: Future[list[tuple[bytes, int]]],
    progress: Callable[[int], None] | None,
) -> None:
    """A job's PDFs written to their files, whole or not at all, and counted."""
    printed = job.result()
    for path, (data, pages) in zip(paths, printed, strict=True):
        write_atomically(path, data)
        run.files.append(path)
        run.pages += pages
    run.letters += letters
    if progress is not None:
        progress(letters)


def _letters_by_id(engine: Engine, ids: list[int]) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(letter_table).where(letter_table.c.id.in_(ids)).order_by(letter_table.c.id)
        )
        return [dict(row._mapping) for row in rows]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "wave"
