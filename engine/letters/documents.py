"""Reading letters back: listing them and building each one's printable HTML and PDF."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from engine import system
from engine.errors import CampaignError
from engine.letters.merge import member_from_snapshot, paragraphs_html, without_placeholders
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
    return renderer.layout.render(
        letter={"reference": letter["reference"], "date": snapshot["date"], "subject": letter["subject"]},
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
        body_html=letter_html(letter, renderer),
    )


def _with_address(member: dict[str, Any], address: str | None) -> dict[str, Any]:
    return {**member, "address": address} if address else member


def letter_html(letter: dict[str, Any], renderer: WaveRenderer) -> str:
    """The letter's body as HTML paragraphs, derived from its frozen text."""
    text = without_placeholders(letter.get("final_text") or letter["body_text"])
    return paragraphs_html(text, renderer.paragraph_style)


_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.S | re.I)


def pdf_bytes(documents: list[str]) -> bytes:
    """Render letter documents (same layout) into one PDF, a new page for each letter."""
    # Loaded here: it loads Pango, which most commands never need.
    HTML = system.weasyprint().HTML  # noqa: N806

    if len(documents) == 1:
        return HTML(string=documents[0]).write_pdf()
    # One document with page breaks renders several times faster than one per letter.
    head = documents[0].split("<body", 1)[0]
    bodies = []
    for i, document in enumerate(documents):
        match = _BODY.search(document)
        inner = match.group(1) if match else document
        brk = ' style="page-break-after: always"' if i < len(documents) - 1 else ""
        bodies.append(f"<section{brk}>{inner}</section>")
    return HTML(string=f"{head}<body>{''.join(bodies)}</body></html>").write_pdf()


def write_wave_pdfs(
    engine: Engine,
    wave_name: str,
    out_dir: str | Path,
    *,
    combined: bool = False,
    limit: int | None = None,
    references: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """PDFs of a launched wave's letters: one per letter, or one for a print run with `combined`."""
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
        stmt = select(letter_table).where(lt.wave_id == wave["id"]).order_by(lt.id)
        if references:
            stmt = stmt.where(lt.reference.in_(references))
        if limit:
            stmt = stmt.limit(limit)
        letters = [dict(r._mapping) for r in conn.execute(stmt)]
    if not letters:
        raise CampaignError(f"wave {wave_name!r} has no letters to print")
    renderer = WaveRenderer(wave["frozen"])
    written: list[Path] = []
    if combined:
        batch_size = 200  # keeps WeasyPrint's memory bounded on large print runs
        for start in range(0, len(letters), batch_size):
            batch = letters[start : start + batch_size]
            suffix = f"-{start // batch_size + 1:03d}" if len(letters) > batch_size else ""
            path = out / f"{_slug(wave_name)}-letters{suffix}.pdf"
            write_atomically(path, pdf_bytes([letter_document(letter, renderer) for letter in batch]))
            written.append(path)
            if progress is not None:
                progress(len(batch))
        return written
    for letter in letters:
        path = out / f"{letter['reference']}.pdf"
        write_atomically(path, pdf_bytes([letter_document(letter, renderer)]))
        written.append(path)
        if progress is not None:
            progress(1)
    return written


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "wave"
