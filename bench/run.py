"""`make bench`: every stage at 10,000 and 100,000 members (BENCH_FULL=1 adds 500,000), each
beside its anchor measured in the same run, as one table and as bench/results.json.

Each benchmark runs in its own process (peak memory is then its own) and appends one JSON line
per stage to a file this runner names in BENCH_RESULTS. The machine is shared: read the ratios,
which put both sides of a comparison through the same noise, rather than the rates.

    python bench/run.py                      # 10k and 100k
    BENCH_FULL=1 python bench/run.py         # and 500k
    python bench/run.py --sizes 2000         # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1/campaign_bench"


def ensure_database(url: str) -> bool:
    """Make the benchmarks' own PostgreSQL database if it is missing; False if no server answers."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    try:
        server = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            known = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if known is None:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
        server.dispose()
        return True
    except Exception as exc:  # no server here: the PostgreSQL rows are left out, and said so
        print(f"PostgreSQL at {target.host}: {type(exc).__name__}; its rows are left out", file=sys.stderr)
        return False


def run(script: str, *args: object, results: Path) -> None:
    command = [sys.executable, str(HERE / script), *map(str, args)]
    print(f"$ {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        command,
        env={**os.environ, "BENCH_RESULTS": str(results)},
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        print(f"    {line}")
    if done.returncode not in (0, 1):  # 1: a benchmark's own target missed; it printed which
        print(f"    FAILED (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    print(f"    ({time.perf_counter() - started:.0f} s)", flush=True)


def table(records: list[dict]) -> str:
    stages = [r for r in records if "stage" in r]
    first: dict[str, dict] = {}
    for record in stages:
        first.setdefault(record["stage"], record)
    lines = [
        f"{'stage':<24} {'members':>9} {'seconds':>8} {'per s':>9} {'peak MB':>8} "
        f"{'anchor per s':>12} {'ratio':>6} {'growth':>7}",
    ]
    for r in stages:
        ratio = f"{r['per_s'] / r['anchor_per_s']:.2f}" if r.get("anchor_per_s") and r.get("per_s") else "-"
        base = first[r["stage"]]
        growth = "-"
        if base is not r and base.get("per_s") and r.get("per_s"):
            # Time per row at this size against the smallest size: 1.00 is linear.
            growth = f"{base['per_s'] / r['per_s']:.2f}"
        unit = f" {r['unit']}" if r.get("unit") else ""
        if r.get("second_anchor_per_s") and r.get("per_s"):
            # A second anchor (launch: the mailmerge CLI) as a multiple, after the table's columns.
            unit += f"  {r['per_s'] / r['second_anchor_per_s']:.1f}× {r['second_anchor']}"
        lines.append(
            f"{r['stage']:<24} {r['members']:>9,} {r['seconds']:>8.1f} {r['per_s'] or 0:>9,.0f} "
            f"{r['peak_rss_mb']:>8.0f} {r.get('anchor_per_s') or 0:>12,.0f} {ratio:>6} {growth:>7}{unit}"
        )
    workers = [r for r in records if "send_workers" in r]
    if workers:
        one = next((w["per_s"] for w in workers if w["send_workers"] == 1), None)
        lines.append("")
        lines.append(
            f"{'send workers on PostgreSQL':<28} {'per s':>8} {'× one':>6} "
            f"{'sent':>8} {'twice':>6} {'left':>6}"
        )
        for w in workers:
            times = f"{w['per_s'] / one:.2f}" if one else "-"
            lines.append(
                f"{w['send_workers']:<28} {w['per_s']:>8,.0f} {times:>6} {w['sent']:>8,} "
                f"{w['duplicates']:>6} {w['left_queued']:>6}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="members (default 10000 100000, +500000 with BENCH_FULL=1)"
    )
    parser.add_argument(
        "--pg", default=os.environ.get("BENCH_PG", DEFAULT_PG), help="PostgreSQL URL (tables replaced)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    sizes = args.sizes or ([10_000, 100_000] + ([500_000] if os.environ.get("BENCH_FULL") == "1" else []))
    results = Path(tempfile.mkdtemp(prefix="campaign-bench-")) / "results.jsonl"
    results.touch()
    pg = args.pg if ensure_database(args.pg) else None
    for number, n in enumerate(sizes):
        run("bench_import_resolve.py", "--members", n, results=results)
        run("bench_launch.py", "--members", n, results=results)
        if pg:
            run("bench_launch.py", "--members", n, "--db", pg, results=results)
        # Sending is timed on up to 20,000 messages: its rate does not depend on the members held.
        send = ["--messages", min(n, 20_000), "--rounds", 1]
        if pg and number == 0:
            send += ["--pg", pg, "--workers", 1, 2, 4]
        run("bench_send.py", *send, results=results)
        run(
            "bench_ingest.py",
            "--messages",
            max(n // 10, 100),
            "--letters",
            n,
            "--bounce-recipients",
            min(n, 10_000),
            results=results,
        )
        run("bench_report.py", "--members", n, results=results)
    # A print run's pages per second do not depend on the wave's size: 300 letters, once.
    run("bench_pdf.py", "--letters", 300, results=results)
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print()
    print(table(records))
    out = {
        "stages": [r for r in records if "stage" in r],
        "send_workers": [
            {"workers": r["send_workers"], **{k: v for k, v in r.items() if k != "send_workers"}}
            for r in records
            if "send_workers" in r
        ],
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
