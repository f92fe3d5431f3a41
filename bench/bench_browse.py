"""Benchmark: the staff pages' queries over one big wave (engine/reports/browse.py).

Launches an MP wave of N synthetic members, spreads its letters over 600 MPs, 150 employers,
12 regions and the states a wave goes through, gives one letter in ten a reply, then times what
each page reads: the filter choices, a filtered page near the start and at the end, the
employers' and MPs' table, and one MP's page. Every one must stay well under a second.

    python bench/bench_browse.py --members 100000 --db postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_send import prepare  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from engine.reports.browse import (  # noqa: E402
    LetterFilter,
    letter_choices,
    list_letters,
    target_letters,
    target_replies,
    target_summary,
    target_table,
)
from engine.store.db import open_engine  # noqa: E402
from engine.store.models import wave_table  # noqa: E402

SPREAD = [
    # Letters spread over targets, members over regions and employers, as a national wave is.
    "UPDATE letter SET target_key = 'E14' || lpad(CAST(id % 600 AS TEXT), 6, '0'), "
    "target_name = 'MP ' || CAST(id % 600 AS TEXT)",
    "UPDATE member SET region = 'Region ' || CAST(id % 12 AS TEXT), "
    "employer_key = 'la:' || CAST(id % 150 AS TEXT), employer_name = 'Council ' || CAST(id % 150 AS TEXT)",
    "UPDATE letter SET state = CASE id % 10 WHEN 0 THEN 'replied' WHEN 1 THEN 'opted_out' "
    "WHEN 2 THEN 'overdue' WHEN 3 THEN 'invited' ELSE 'sent' END",
    "UPDATE letter SET sent_at = created_at WHERE state IN ('replied', 'overdue', 'sent')",
    "UPDATE letter SET replied_at = created_at WHERE state = 'replied'",
    "INSERT INTO inbound (dedupe_key, source, raw, size, received_at, ingested_at, kind, letter_id, "
    "forwarded, subject, outcome) SELECT 'bench-' || CAST(id AS TEXT), 'bench', '', 0, created_at, "
    "created_at, 'reply', id, false, 'RE: letter', "
    "CASE id % 3 WHEN 0 THEN 'supportive' WHEN 1 THEN 'refusal' ELSE NULL END "
    "FROM letter WHERE state = 'replied'",
]


def timed(label: str, run) -> object:
    start = time.perf_counter()
    result = run()
    print(f"{label:<48} {time.perf_counter() - start:7.3f} s")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--db", required=True, help="PostgreSQL URL (its tables are replaced)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-browse-"))
    start = time.perf_counter()
    prepare(args.db, args.members, work)
    engine = open_engine(args.db)
    with engine.begin() as conn:
        for statement in SPREAD:
            conn.execute(text(statement))
        wave = conn.execute(select(wave_table.c.id)).scalar_one()
    # As autovacuum would have by now: the updates above left every letter row twice over.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"set up {args.members:,} letters in {time.perf_counter() - start:.0f} s")
    choices = timed("filter choices (4 GROUP BYs)", lambda: letter_choices(engine, wave))
    timed("all letters, page 1", lambda: list_letters(engine, wave, LetterFilter()))
    wanted = LetterFilter(state="replied", region="Region 4", outcome="supportive")
    found = timed("replied + region + outcome, page 1", lambda: list_letters(engine, wave, wanted))
    last = -(-args.members // 100)
    timed(f"all letters, last page ({last})", lambda: list_letters(engine, wave, LetterFilter(), last))
    timed("no reply, page 1", lambda: list_letters(engine, wave, LetterFilter(outcome="no_reply")))
    timed("employers and MPs, most silent first", lambda: target_table(engine, None, "mp"))
    key = "E14000007"
    timed("one MP: summary", lambda: target_summary(engine, "mp", key))
    timed("one MP: letters, page 1", lambda: target_letters(engine, "mp", key))
    timed("one MP: replies", lambda: target_replies(engine, "mp", key))
    print(f"{len(choices['employer'])} employers, {found['total']:,} letters match the combined filter")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
