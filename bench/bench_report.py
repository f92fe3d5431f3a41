"""Benchmark: `campaign report WAVE --by region` on a launched wave of N letters, beside one
bare GROUP BY over the same letters, in the same run.

    python bench/bench_report.py --members 100000
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

from engine.reports.campaign import funnel, responsiveness  # noqa: E402
from engine.store.db import open_engine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--db", help="database URL (its tables are replaced; default: SQLite)")
    args = parser.parse_args()
    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-report-"))
    url = args.db or f"sqlite:///{work}/report.db"
    prepare(url, args.members, work)
    engine = open_engine(url)
    with engine.connect() as conn:
        t = time.perf_counter()
        conn.exec_driver_sql(
            "SELECT m.region, l.state, count(*) FROM letter l JOIN member m ON m.id = l.member_id "
            "GROUP BY m.region, l.state"
        ).all()
        bare_s = time.perf_counter() - t
    t = time.perf_counter()
    found = funnel(engine, "bench", by="region")
    responsiveness(engine, "bench")
    report_s = time.perf_counter() - t
    letters = found["funnel"][0]["count"]
    print(
        f"report:          {letters:,} letters, funnel by region and targets in {report_s:.2f} s "
        f"= {letters / report_s:,.0f} letters/s; one bare GROUP BY: {bare_s:.2f} s"
    )
    stage(
        "report" if url.startswith("sqlite") else "report (PostgreSQL)",
        args.members,
        letters,
        report_s,
        anchor="one GROUP BY of the letters by region and state",
        anchor_per_s=letters / bare_s,
    )
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
