"""What each benchmark measured, as one record per stage, for `make bench`'s table.

A benchmark calls `stage(...)` for each stage it times; when `BENCH_RESULTS` names a file (the
runner sets it), the record is appended to it as one JSON line. Run alone, a benchmark still
prints its own lines and records nothing.
"""

from __future__ import annotations

import json
import os
import resource


def peak_rss_mb() -> float:
    """The largest resident set this process has had, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage(
    name: str,
    members: int,
    count: int,
    seconds: float,
    *,
    anchor: str | None = None,
    anchor_per_s: float | None = None,
    peak_mb: float | None = None,
    **extra: object,
) -> None:
    """One stage: `count` rows (letters, messages, pages…) in `seconds`, beside what its
    anchor (the bare library doing the same work, measured in the same run) managed."""
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    record = {
        "stage": name,
        "members": members,
        "count": count,
        "seconds": round(seconds, 3),
        "per_s": round(count / seconds, 1) if seconds else None,
        "peak_rss_mb": round(peak_mb if peak_mb is not None else peak_rss_mb(), 1),
        "anchor": anchor,
        "anchor_per_s": round(anchor_per_s, 1) if anchor_per_s else None,
        **extra,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def send_workers(workers: int, per_s: float, sent: int, duplicates: int, left: int) -> None:
    """One run of several send workers on PostgreSQL."""
    path = os.environ.get("BENCH_RESULTS")
    if not path:
        return
    record = {
        "send_workers": workers,
        "per_s": round(per_s, 1),
        "sent": sent,
        "duplicates": duplicates,
        "left_queued": left,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
