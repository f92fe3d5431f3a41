"""Benchmark: a print run (`campaign wave pdf --combined`) beside WeasyPrint printing the same
letters as one document, in the same run; pages per second, and pages per letter.

    python bench/bench_pdf.py --letters 500
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import prepare  # noqa: E402
from results import stage  # noqa: E402
from sqlalchemy import select  # noqa: E402

from engine import system  # noqa: E402
from engine.letters.documents import letter_document, write_wave_pdfs  # noqa: E402
from engine.letters.render import WaveRenderer  # noqa: E402
from engine.store.db import open_engine  # noqa: E402
from engine.store.models import letter_table, wave_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--letters", type=int, default=500, help="letters printed")
    parser.add_argument("--members", type=int, help="members in the wave (default: as many as letters)")
    args = parser.parse_args()
    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-pdf-"))
    url = f"sqlite:///{work}/pdf.db"
    members = max(args.members or 0, args.letters)
    prepare(url, members, work)
    engine = open_engine(url)
    with engine.connect() as conn:
        frozen = conn.execute(select(wave_table.c.frozen).where(wave_table.c.name == "bench")).scalar_one()
        letters = [
            dict(r._mapping)
            for r in conn.execute(select(letter_table).order_by(letter_table.c.id).limit(args.letters))
        ]
    renderer = WaveRenderer(frozen)
    HTML = system.weasyprint().HTML  # noqa: N806

    # The anchor: WeasyPrint alone, the same letters' documents in one HTML document, one PDF.
    documents = [letter_document(letter, renderer) for letter in letters]
    head = documents[0].split("<body", 1)[0]
    inner = [d.split("<body", 1)[1].split(">", 1)[1].rsplit("</body>", 1)[0] for d in documents]
    bodies = "".join(f'<section style="page-break-after: always">{body}</section>' for body in inner)
    t = time.perf_counter()
    rendered = HTML(string=f"{head}<body>{bodies}</body></html>").render()
    rendered.write_pdf()
    bare_s = time.perf_counter() - t
    bare_pages = len(rendered.pages)

    t = time.perf_counter()
    run = write_wave_pdfs(engine, "bench", work / "pdfs", combined=True, states=["all"], limit=args.letters)
    run_s = time.perf_counter() - t
    print(
        f"print run:       {run.letters:,} letters, {run.pages:,} pages in {run_s:.1f} s = "
        f"{run.pages / run_s:,.1f} pages/s ({run.pages / run.letters:.2f} pages a letter, "
        f"{len(run.files)} file(s))"
    )
    print(
        f"bare WeasyPrint: {bare_pages:,} pages in {bare_s:.1f} s = {bare_pages / bare_s:,.1f} pages/s; "
        f"the print run is {(run.pages / run_s) / (bare_pages / bare_s):.0%} of that"
    )
    stage(
        "PDF print run",
        members,
        run.pages,
        run_s,
        anchor="WeasyPrint, the same letters in one document",
        anchor_per_s=bare_pages / bare_s,
        unit="pages",
        letters=run.letters,
        pages_per_letter=round(run.pages / run.letters, 2),
    )
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
