"""Benchmark: a print run (`campaign wave pdf --combined`), and the same letters one PDF each
(`wave pdf` alone), beside WeasyPrint printing the same letters as one document, in the same
run; pages per second, CPU, pages per letter, and the files' sizes.

    python bench/bench_pdf.py --letters 500
"""

from __future__ import annotations

import argparse
import os
import resource
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


class Clock:
    """Wall time and CPU time (this process's and its finished workers') since it was made: on
    a shared machine the CPU says what the work cost when the wall clock says how busy it was."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), self._cpu()

    @staticmethod
    def _cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, self._cpu() - self.cpu


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
    clock = Clock()
    rendered = HTML(string=f"{head}<body>{bodies}</body></html>").render()
    bare_size = len(rendered.write_pdf())
    bare_s, bare_cpu = clock.read()
    bare_pages = len(rendered.pages)
    del rendered  # not kept alive (and walked by the garbage collector) while the runs are timed
    bare_rate = bare_pages / bare_s
    print(
        f"bare WeasyPrint: {bare_pages:,} pages in {bare_s:.1f} s = {bare_rate:,.1f} pages/s "
        f"(CPU {bare_cpu:.1f} s), {bare_size / 1024:,.0f} KB"
    )

    for combined, name in ((True, "PDF print run"), (False, "PDF, one per letter")):
        clock = Clock()
        run = write_wave_pdfs(
            engine, "bench", work / name, combined=combined, states=["all"], limit=args.letters
        )
        run_s, run_cpu = clock.read()
        size = sum(path.stat().st_size for path in run.files)
        rate = run.pages / run_s
        print(
            f"{name + ':':<21}{run.letters:,} letters, {run.pages:,} pages in {run_s:.1f} s = "
            f"{rate:,.1f} pages/s (CPU {run_cpu:.1f} s, workers' included); {run.pages / run.letters:.2f} "
            f"pages a letter; {len(run.files)} file(s), {size / 1024:,.0f} KB "
            f"({size / 1024 / len(run.files):,.1f} KB a file)"
        )
        print(
            f"{'':<21}{rate / bare_rate:.0%} of bare WeasyPrint's pages/s; "
            f"CPU a page {run_cpu / run.pages * 1000:.0f} ms, against "
            f"{bare_cpu / bare_pages * 1000:.0f} ms"
        )
        stage(
            name,
            members,
            run.pages,
            run_s,
            anchor="WeasyPrint, the same letters in one document",
            anchor_per_s=bare_rate,
            unit="pages",
            letters=run.letters,
            pages_per_letter=round(run.pages / run.letters, 2),
            files=len(run.files),
            kb=round(size / 1024),
            cpu_s=round(run_cpu, 1),
            anchor_cpu_s=round(bare_cpu, 1),
        )
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
