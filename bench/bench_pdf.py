"""Benchmark: a print run (`campaign wave pdf --combined`), and the same letters one PDF each
(`wave pdf` alone), beside WeasyPrint printing the same letters as one document, in the same
run; pages per second, CPU, pages per letter, and the files' sizes.

    python bench/bench_pdf.py --letters 500
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import prepare  # noqa: E402
from results import peak_rss_mb, stage  # noqa: E402
from sqlalchemy import select  # noqa: E402

from engine import system  # noqa: E402
from engine.letters.documents import PrintRun, letter_document, write_wave_pdfs  # noqa: E402
from engine.letters.render import WaveRenderer  # noqa: E402
from engine.store.db import open_engine  # noqa: E402
from engine.store.models import letter_table, wave_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


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


def bare_weasyprint(url: str, limit: int) -> tuple[int, float, float, int, float]:
    """The anchor: WeasyPrint alone, the same letters' documents in one HTML document, one PDF;
    (pages, seconds, CPU seconds, bytes, peak MB)."""
    engine = open_engine(url)
    with engine.connect() as conn:
        frozen = conn.execute(select(wave_table.c.frozen).where(wave_table.c.name == "bench")).scalar_one()
        letters = [
            dict(r._mapping)
            for r in conn.execute(select(letter_table).order_by(letter_table.c.id).limit(limit))
        ]
    engine.dispose()
    renderer = WaveRenderer(frozen)
    HTML = system.weasyprint().HTML  # noqa: N806
    documents = [letter_document(letter, renderer) for letter in letters]
    head = documents[0].split("<body", 1)[0]
    inner = [d.split("<body", 1)[1].split(">", 1)[1].rsplit("</body>", 1)[0] for d in documents]
    bodies = "".join(f'<section style="page-break-after: always">{body}</section>' for body in inner)
    clock = Clock()
    rendered = HTML(string=f"{head}<body>{bodies}</body></html>").render()
    size = len(rendered.write_pdf())
    seconds, cpu = clock.read()
    return len(rendered.pages), seconds, cpu, size, peak_mb()


def print_run(url: str, limit: int, out: Path, combined: bool) -> tuple[PrintRun, float, float, float]:
    """`wave pdf` (with or without --combined) on the same letters; (run, seconds, CPU seconds,
    peak MB)."""
    engine = open_engine(url)
    clock = Clock()
    run = write_wave_pdfs(engine, "bench", out, combined=combined, states=["all"], limit=limit)
    seconds, cpu = clock.read()
    engine.dispose()
    return run, seconds, cpu, peak_mb()


def peak_mb() -> float:
    """The peak memory of this process or of the largest of its workers."""
    return max(peak_rss_mb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def in_own_process(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in a process of its own, as a command runs: neither side of the
    comparison inherits the other's heap (a 300-page layout leaves one behind)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


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

    bare_pages, bare_s, bare_cpu, bare_size, bare_mb = in_own_process(bare_weasyprint, url, args.letters)
    bare_rate = bare_pages / bare_s
    print(
        f"bare WeasyPrint: {bare_pages:,} pages in {bare_s:.1f} s = {bare_rate:,.1f} pages/s "
        f"(CPU {bare_cpu:.1f} s), {bare_size / 1024:,.0f} KB, peak {bare_mb:,.0f} MB"
    )

    for combined, name in ((True, "PDF print run"), (False, "PDF, one per letter")):
        run, run_s, run_cpu, run_mb = in_own_process(print_run, url, args.letters, work / name, combined)
        size = sum(path.stat().st_size for path in run.files)
        rate = run.pages / run_s
        print(
            f"{name + ':':<21}{run.letters:,} letters, {run.pages:,} pages in {run_s:.1f} s = "
            f"{rate:,.1f} pages/s (CPU {run_cpu:.1f} s, workers' included); {run.pages / run.letters:.2f} "
            f"pages a letter; {len(run.files)} file(s), {size / 1024:,.0f} KB "
            f"({size / 1024 / len(run.files):,.1f} KB a file); peak {run_mb:,.0f} MB"
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
            peak_mb=run_mb,
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
