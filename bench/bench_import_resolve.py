"""Benchmark: import N synthetic members, then resolve them against a local fake postcodes.io.

The fake answers like postcodes.io's bulk endpoint after a fixed latency
(default 20 ms) and runs in its own process, so the peak memory printed is the
engine's alone. Prints rows/s for import, HTTP requests made, resolve time, a
second resolve's requests (must be 0), and peak RSS, then checks the targets.

    python bench/bench_import_resolve.py --members 100000
    python bench/bench_import_resolve.py --members 500000 --db postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import random
import resource
import sqlite3
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import stage  # noqa: E402

from engine.lookup.http import JsonClient
from engine.lookup.postcodes_io import PostcodesIO
from engine.lookup.resolve import resolve_members
from engine.members.importer import import_members
from engine.store.db import init_db, open_engine

AREAS = [
    "AL",
    "B",
    "BA",
    "BD",
    "BH",
    "BL",
    "BN",
    "BR",
    "BS",
    "CB",
    "CF",
    "CH",
    "CM",
    "CO",
    "CR",
    "CV",
    "DE",
    "DH",
    "DN",
    "DT",
    "E",
    "EH",
    "EX",
    "G",
    "GL",
    "GU",
    "HA",
    "HP",
    "HU",
    "IP",
    "KT",
    "L",
    "LE",
    "LS",
    "M",
    "ME",
    "MK",
    "N",
    "NE",
    "NG",
    "NR",
    "OX",
    "PE",
    "PL",
    "PO",
    "PR",
    "RG",
    "S",
    "SA",
    "SE",
    "SK",
    "SO",
    "ST",
    "SW",
    "TN",
    "TR",
    "W",
    "WF",
    "WR",
    "YO",
]
LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


def postcode(i: int) -> str:
    """The i-th synthetic postcode; all distinct and all of valid shape."""
    inward_count = 10 * len(LETTERS) ** 2
    outward, inward = divmod(i, inward_count)
    area = AREAS[outward % len(AREAS)]
    district = outward // len(AREAS) + 1
    digit, rest = divmod(inward, len(LETTERS) ** 2)
    return f"{area}{district} {digit}{LETTERS[rest // len(LETTERS)]}{LETTERS[rest % len(LETTERS)]}"


def write_members(path: Path, n: int, distinct_ratio: float) -> int:
    distinct = max(1, int(n * distinct_ratio))
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            [
                "membership_no",
                "first_name",
                "last_name",
                "email",
                "postcode",
                "school_urn",
                "address_line1",
                "town",
                "role",
                "branch",
                "region",
                "years_in_post",
            ]
        )
        for i in range(n):
            pc = postcode(i if i < distinct else rng.randrange(distinct))
            out.writerow(
                [
                    f"M{i:07d}",
                    "Sam",
                    f"Member{i}",
                    f"member{i}@members.example.org",
                    pc,
                    str(100000 + i % 20000),
                    f"{i % 200} High Street",
                    "Town",
                    "Teacher",
                    f"Branch {i % 90}",
                    "Region",
                    str(i % 30),
                ]
            )
    return distinct


def serve_fake_postcodes_io(port_queue: multiprocessing.Queue, latency: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            time.sleep(latency)
            asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["postcodes"]
            results = []
            for pc in asked:
                code = f"E1400{1063 + hash(pc.split()[0]) % 540:04d}"
                results.append(
                    {
                        "query": pc,
                        "result": {
                            "postcode": pc,
                            "quality": 1,
                            "country": "England",
                            "parliamentary_constituency": f"Seat {code}",
                            "parliamentary_constituency_2024": f"Seat {code}",
                            "codes": {
                                "parliamentary_constituency": code,
                                "parliamentary_constituency_2024": code,
                            },
                        },
                    }
                )
            self._reply(200, {"status": 200, "result": results})

        def do_GET(self) -> None:
            time.sleep(latency)
            self._reply(404, {"status": 404, "error": "Terminated postcode not found"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--distinct", type=float, default=0.6, help="share of distinct postcodes")
    parser.add_argument("--latency", type=float, default=0.02, help="fake postcodes.io latency, seconds")
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--import-only", action="store_true", help="stop after the import and re-import")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    csv_path = work / "members.csv"
    t = time.perf_counter()
    distinct = write_members(csv_path, args.members, args.distinct)
    print(
        f"generated {args.members:,} members ({distinct:,} distinct postcodes, "
        f"{csv_path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s"
    )

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve_fake_postcodes_io, args=(queue, args.latency), daemon=True)
    server.start()
    port = queue.get(timeout=10)

    url = args.db or f"sqlite:///{work}/bench.db"
    engine = open_engine(url)
    if args.db:  # start clean on a shared server
        from sqlmodel import SQLModel

        from engine.store import models  # noqa: F401

        with engine.begin() as conn:
            SQLModel.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    init_db(engine)

    t = time.perf_counter()
    result = import_members(engine, csv_path)
    import_s = time.perf_counter() - t
    print(
        f"import:          {result.created:,} created in {import_s:.2f} s = "
        f"{args.members / import_s:,.0f} rows/s"
    )

    # The anchor: the same file read with csv and inserted with one executemany into a SQLite
    # table of the same columns, in the same run: what any import costs before checking a row.
    bare = sqlite3.connect(work / "bare.db")
    t = time.perf_counter()
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        columns = ", ".join(f'"{c}"' for c in header)
        bare.execute(f"CREATE TABLE member (id INTEGER PRIMARY KEY, {columns})")
        marks = ", ".join("?" for _ in header)
        bare.executemany(f"INSERT INTO member ({columns}) VALUES ({marks})", reader)
    bare.commit()
    bare_s = time.perf_counter() - t
    bare.close()
    print(
        f"bare import:     {args.members / bare_s:,.0f} rows/s (csv + executemany); "
        f"import is {bare_s / import_s:.0%} of that"
    )
    stage(
        "import" if url.startswith("sqlite") else "import (PostgreSQL)",
        args.members,
        args.members,
        import_s,
        anchor="csv + executemany into SQLite",
        anchor_per_s=args.members / bare_s,
    )

    t = time.perf_counter()
    again = import_members(engine, csv_path)
    reimport_s = time.perf_counter() - t
    print(
        f"re-import:       {again.unchanged:,} unchanged in {reimport_s:.2f} s = "
        f"{args.members / reimport_s:,.0f} rows/s, {bare_s / reimport_s:.0%} of the bare import"
    )

    if args.import_only:
        server.terminate()
        engine.dispose()
        return 0

    def client() -> PostcodesIO:
        return PostcodesIO(JsonClient("postcodes.io", f"http://127.0.0.1:{port}", tries=3, backoff=0.1))

    first = client()
    t = time.perf_counter()
    summary = resolve_members(engine, first)
    resolve_s = time.perf_counter() - t
    print(
        f"resolve:         {summary.members:,} members, {summary.postcodes_asked:,} postcodes in "
        f"{first.requests_made:,} requests ({first.requests_made / args.members:.2%} of members), "
        f"{resolve_s:.2f} s"
    )
    stage(
        "resolve",
        args.members,
        summary.members,
        resolve_s,
        anchor=None,
        requests=first.requests_made,
        latency_s=args.latency,
    )
    second = client()
    t = time.perf_counter()
    resolve_members(engine, second)
    print(f"second resolve:  {second.requests_made} requests, {time.perf_counter() - t:.2f} s")
    peak = peak_mb()
    print(f"peak memory:     {peak:.0f} MB (RSS of the engine process)")
    if url.startswith("sqlite"):
        db_file = work / "bench.db"
        print(f"database:        {db_file.stat().st_size / 1e6:.1f} MB")
    server.terminate()
    engine.dispose()

    failures = []
    if args.members >= 100_000 and import_s * 100_000 / args.members > 10 and url.startswith("sqlite"):
        failures.append("import slower than 100,000 members in 10 s")
    if first.requests_made > args.members * 0.01:
        failures.append("resolve made more than 1% as many requests as members")
    if second.requests_made:
        failures.append("second resolve made requests")
    if peak > 300:
        failures.append("peak memory over 300 MB")
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    if not failures:
        print("all targets met")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
