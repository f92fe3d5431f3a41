"""kill -9 at random moments: every long command, rerun, ends where an uninterrupted run ends.

Each backend gets two databases fed the same generated data: one where every
command runs once, uninterrupted and timed, and one where the same command is
killed (SIGKILL) after a seeded random delay within that time, then run again
to completion. After each command the two must hold the same rows: nothing
lost, nothing twice. `send` may leave one message per kill `uncertain` (the
worker died mid-SMTP-transaction); the SMTP sink must have every other message
exactly once.

CI runs KILLS=1 kill per command per backend; `FAULTS_FULL=1` runs 20, and
`FAULTS_SEED=N` replays another sequence of moments. Each kill is printed
(`pytest -s`) with its delay, so a failure can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PG_URL, ROOT, TEST_SECRET, Cli, _pg_problem, unavailable
from pypdf import PdfReader
from smtp_server import SmtpServer
from sqlalchemy import select

from engine.store.db import init_db, open_engine
from engine.store.models import (
    failure_table,
    inbound_table,
    letter_table,
    member_table,
    mp_table,
    outbox_table,
    postcode_table,
    suppression_table,
    wave_table,
)

sys.path.insert(0, str(ROOT / "bench"))
from bench_ingest import AUTO, BOUNCE, DIRECT, FORWARD, mbox_of_replies  # noqa: E402

FULL = os.environ.get("FAULTS_FULL") == "1"
KILLS = 20 if FULL else 1
SEED = int(os.environ.get("FAULTS_SEED", "16"))
MEMBERS = 3000
SEATS = 20  # fake constituencies, each with an MP
BRANCHES = 10  # the wave writes for one branch of ten: 300 letters, so sending stays quick
INCOMING = 100
PRINTED = 8
# Imports done and waiting for a line on stdin: the kill's clock starts when the command starts
# its work, not while the interpreter loads (about two seconds here, the same for every command).
PRELOADED = (
    "import sys; from engine.cli import main; print('ready', flush=True); sys.stdin.readline(); "
    "main(args=sys.argv[1:], prog_name='campaign')"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two migrated, empty databases of one kind: (uninterrupted, killed)."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path}/{name}.db" for name in ("clean", "killed")]
        schemas: list[str] = []
    else:
        problem = _pg_problem()
        if problem:
            unavailable(problem)
        schemas = [f"ce_faults_{uuid.uuid4().hex[:12]}" for _ in range(2)]
        sep = "&" if "?" in PG_URL else "?"
        urls = [f"{PG_URL}{sep}options=-csearch_path%3D{schema}" for schema in schemas]
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"CREATE SCHEMA {schema}")
    for url in urls:
        engine = open_engine(url)
        init_db(engine)
        engine.dispose()
    try:
        yield urls[0], urls[1]
    finally:
        if schemas:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")


def bulk_answer(asked: list[str]) -> dict[str, Any]:
    """postcodes.io's bulk answer for `asked`, each postcode in its seat (see `seat`)."""
    results = []
    for pc in asked:
        code = seat(pc)
        result = {
            "postcode": pc,
            "quality": 1,
            "country": "England",
            "parliamentary_constituency": f"Seat {code}",
            "parliamentary_constituency_2024": f"Seat {code}",
            "codes": {"parliamentary_constituency": code, "parliamentary_constituency_2024": code},
        }
        results.append({"query": pc, "result": result})
    return {"status": 200, "result": results}


def seat(postcode: str) -> str:
    """A postcode's constituency: stable across processes (str hashes are not)."""
    return f"E140{1 + zlib.crc32(postcode.split()[0].encode()) % SEATS:05d}"


class FakePostcodesIO:
    """postcodes.io's bulk endpoint on 127.0.0.1, answering after `latency` seconds."""

    def __init__(self, latency: float = 0.05):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                time.sleep(fake.latency)
                asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["postcodes"]
                body = json.dumps(bulk_answer(asked)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client killed mid-answer: expected here

        self.latency = latency
        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakePostcodesIO:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_members_csv(path: Path) -> None:
    lines = [
        "membership_no,first_name,last_name,email,postcode,school_urn,address_line1,town,role,branch,region"
    ]
    areas = ["BR", "TN", "EX", "N", "PR", "SE", "LS", "M", "B", "NE", "BS", "CB"]
    for i in range(MEMBERS):
        postcode = f"{areas[i % len(areas)]}{1 + i // 400 % 20} {i % 10}A{'BDEFGHJ'[i // 10 % 7]}"
        lines.append(
            f"M{i:06d},Sam,Member{i},member{i}@members.example.org,{postcode},{100000 + i % 500},"
            f"{i % 90} High Street,Town,Teacher,B{i % BRANCHES},Region"
        )
    path.write_text("\n".join(lines) + "\n")


def add_mps(url: str) -> None:
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(
            mp_table.insert(),
            [
                {
                    "constituency_code": f"E140{k:05d}",
                    "constituency_name": f"Seat E140{k:05d}",
                    "vacant": False,
                    "name": f"Member {k} MP",
                    "email": f"mp{k}@parliament.example",
                    "address_as": f"Ms Member{k}",
                    "source": "csv",
                }
                for k in range(1, SEATS + 1)
            ],
        )
    engine.dispose()


def write_mbox(url: str, path: Path) -> None:
    """The organising mailbox after the wave, built from this database's own references and
    Message-IDs (both random per database), so both databases see the same mail."""
    engine = open_engine(url)
    lt, m, o = letter_table.c, member_table.c, outbox_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(lt.reference, m.first_name, m.last_name, m.email, o.message_id)
            .join(member_table, m.id == lt.member_id)
            .join(outbox_table, o.letter_id == lt.id)
            .where(o.kind == "invitation")
            .order_by(m.membership_no)
            .limit(INCOMING)
        ).all()
    engine.dispose()
    mbox_of_replies(path, rows, (FORWARD, FORWARD, FORWARD, DIRECT, DIRECT, BOUNCE, AUTO))


def snapshot(url: str) -> dict[str, Any]:
    """What a user would check, keyed by what both databases share (membership numbers, the
    incoming Message-IDs), not by ids or references, which differ between them."""
    engine = open_engine(url)
    m, lt, o, w = member_table.c, letter_table.c, outbox_table.c, wave_table.c
    with engine.connect() as conn:
        member_no = dict(conn.execute(select(m.id, m.membership_no)).all())
        letter_member = {
            letter_id: member_no[member_id]
            for letter_id, member_id in conn.execute(select(lt.id, lt.member_id))
        }
        members = sorted(
            tuple(r)
            for r in conn.execute(
                select(
                    m.membership_no,
                    m.email,
                    m.postcode,
                    m.branch,
                    m.custom,
                    m.row_hash,
                    m.mp_status,
                    m.constituency_code,
                    m.employer_status,
                    m.mail_opt_out_at.is_(None),
                )
            )
        )
        letters = sorted(
            (letter_member[r.id], r.name, r.kind, r.state, r.target_key, r.target_email, r.bounce_reason)
            for r in conn.execute(
                select(
                    lt.id, w.name, lt.kind, lt.state, lt.target_key, lt.target_email, lt.bounce_reason
                ).join(wave_table, w.id == lt.wave_id)
            )
        )
        outbox = sorted(
            (letter_member.get(r.letter_id), r.kind, r.to_addr, r.status)
            for r in conn.execute(select(o.letter_id, o.kind, o.to_addr, o.status))
        )
        inbound = sorted(
            (
                r.message_id,
                r.kind,
                letter_member.get(r.letter_id),
                r.match_method,
                r.triage,
                letter_member.get(r.suggested_letter_id),
                r.suggested_outcome,
            )
            for r in conn.execute(select(inbound_table))
        )
        counts = {
            table.name: len(conn.execute(select(table)).all())
            for table in (postcode_table, failure_table, suppression_table, wave_table)
        }
    engine.dispose()
    return {
        "members": members,
        "letters": letters,
        "outbox": outbox,
        "inbound": inbound,
        "counts": counts,
    }


class Runner:
    """Runs `python -m engine --db URL …` as a user would, in its own process."""

    def __init__(self, env: dict[str, str]):
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("CAMPAIGN_SECRET_FILE", "CAMPAIGN_DB")},
            "CAMPAIGN_SECRET": TEST_SECRET,
            "CAMPAIGN_HTTP_BACKOFF": "0",
            **env,
        }

    def start(self, url: str, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "engine", "--db", url, *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, url: str, args: list[str]) -> tuple[float, str]:
        started = time.perf_counter()
        process = self.start(url, args)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{args}: exit {process.returncode}\n{err}"
        return time.perf_counter() - started, out

    def kill_at(self, url: str, args: list[str], delay: float) -> bool:
        """Start the command and SIGKILL it `delay` s into its work; whether it was still running."""
        process = subprocess.Popen(
            [sys.executable, "-c", PRELOADED, "--db", url, *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline() == "ready\n", process.communicate()[1]
        process.stdin.write("go\n")
        process.stdin.close()
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            # Reaped before the rerun: the send worker tells a dead worker's claims by its pid.
            process.wait()
            return True
        finally:
            err = process.stderr.read() if process.stderr else ""
            process.stdout.close()
            if process.stderr:
                process.stderr.close()
        assert process.returncode == 0, f"{args}: exit {process.returncode}\n{err}"
        return False


def stage_commands(work: Path, which: str) -> dict[str, list[str]]:
    return {
        "import": ["members", "import", str(work / "members.csv")],
        "resolve": ["resolve"],
        "launch": ["wave", "launch", "Faults", "--similar-warn", "0"],
        "send": ["send", "--once", "--rate", "1000"],
        "ingest": ["replies", "ingest", "--mbox", str(work / f"{which}.mbox")],
        "pdf": [
            "wave",
            "pdf",
            "Faults",
            "--out",
            str(work / f"{which}-pdfs"),
            "--state",
            "all",
            "--limit",
            str(PRINTED),
        ],
    }


def pdf_files(folder: Path) -> list[tuple[str, int]]:
    """Every file in the print folder, each a whole PDF: (name, pages)."""
    found = []
    for path in sorted(folder.iterdir()):
        assert path.suffix == ".pdf" and not path.name.startswith("."), f"stray file {path.name}"
        data = path.read_bytes()
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF"), f"{path.name} is cut short"
        found.append((path.stem, len(PdfReader(path).pages)))
    return found


def test_every_long_command_killed_and_rerun_ends_as_an_uninterrupted_run(databases, tmp_path):
    clean, killed = databases
    backend = "sqlite" if clean.startswith("sqlite") else "postgresql"
    rng = random.Random(f"{SEED}-{backend}")
    write_members_csv(tmp_path / "members.csv")
    for url in (clean, killed):
        add_mps(url)
    kills: Counter[str] = Counter()
    with FakePostcodesIO() as postcodes, SmtpServer() as clean_sink, SmtpServer() as killed_sink:
        # The uninterrupted run is in this process (its time is the command's work alone, as the
        # killed runs' clock counts it); the killed runs and the reruns are processes of their own.
        reference = Cli(clean)
        clean_env = {
            "POSTCODES_IO_URL": postcodes.url,
            "SMTP_URL": clean_sink.url,
            "CAMPAIGN_HTTP_BACKOFF": "0",
        }
        runner = Runner({"POSTCODES_IO_URL": postcodes.url, "SMTP_URL": killed_sink.url})
        for stage in ("import", "resolve", "launch", "send", "ingest", "pdf"):
            if stage == "launch":
                create = ["wave", "create", "Faults", "--target", "mp", "--letter", "mp-inspection",
                          "--invite", "invitation", "--where", "branch=B0"]  # fmt: skip
                assert reference(*create).exit_code == 0
                runner.run(killed, create)
            if stage == "ingest":
                write_mbox(clean, tmp_path / "clean.mbox")
                write_mbox(killed, tmp_path / "killed.mbox")
            started = time.perf_counter()
            done = reference(*stage_commands(tmp_path, "clean")[stage], env=clean_env)
            duration = time.perf_counter() - started
            assert done.exit_code == 0, done.output
            command = stage_commands(tmp_path, "killed")[stage]
            # Within the first 80% of the work: the same command in another process is a little
            # slower or faster from one run to the next. A command that keeps its progress
            # (resolve, send, ingest, pdf) has less left to do after each kill: a run that
            # finished before its kill halves the window.
            window, attempts = duration * 0.8, 0
            while kills[stage] < KILLS and attempts < 3 * KILLS:
                attempts += 1
                delay = rng.uniform(0, window)
                landed = runner.kill_at(killed, command, delay)
                print(
                    f"{backend} {stage}: {'killed' if landed else 'finished before'} at {delay:.2f} s of {duration:.2f} s"
                )
                kills[stage] += landed
                window = window if landed else window / 2
            assert kills[stage] == KILLS, f"{stage}: every run finished before its kill"
            runner.run(killed, command)
            expected, got = snapshot(clean), snapshot(killed)
            if stage == "send":
                uncertain = [row for row in got["outbox"] if row[3] == "uncertain"]
                assert len(uncertain) <= kills["send"], "more messages in doubt than kills"
                check_sink(killed, killed_sink, len(expected["outbox"]))
                assert [r[:3] for r in got["outbox"]] == [r[:3] for r in expected["outbox"]]
                # Uncertain ones go again only when asked (they may arrive twice): ask, to go on.
                runner.run(killed, ["send", "--once", "--rate", "1000", "--resend-uncertain"])
                got = snapshot(killed)
            assert got == expected, f"{stage}: killed and rerun differs: {differences(expected, got)}"
            if stage == "pdf":
                clean_files = pdf_files(tmp_path / "clean-pdfs")
                killed_files = pdf_files(tmp_path / "killed-pdfs")
                assert sorted(p for _, p in killed_files) == sorted(p for _, p in clean_files)
                assert len(killed_files) == PRINTED
    print(f"kills per command ({backend}): {dict(kills)}, all reruns equal to the uninterrupted run")
    assert len(clean_sink.recorder.received) == len(expected["outbox"])


def differences(expected: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Rows only the uninterrupted run has (-) and only the killed one has (+), per table."""
    found: dict[str, Any] = {}
    for key in expected:
        if isinstance(expected[key], list):
            before, after = Counter(map(repr, expected[key])), Counter(map(repr, got[key]))
            if before != after:
                found[key] = {"-": list((before - after).elements()), "+": list((after - before).elements())}
        elif expected[key] != got[key]:
            found[key] = {"-": expected[key], "+": got[key]}
    return found


def check_sink(url: str, sink: SmtpServer, queued: int) -> None:
    """Every message the database says went arrived exactly once; one in doubt at most once."""
    engine = open_engine(url)
    with engine.connect() as conn:
        status = dict(conn.execute(select(outbox_table.c.message_id, outbox_table.c.status)).all())
    engine.dispose()
    arrived = Counter(r.message["Message-ID"] for r in sink.recorder.received)
    assert set(arrived) <= set(status), "the sink got a message the outbox does not hold"
    for message_id, state in status.items():
        if state == "sent":
            assert arrived[message_id] == 1, f"{state} message arrived {arrived[message_id]} times"
        else:
            assert state == "uncertain" and arrived[message_id] <= 1, f"{state}: {arrived[message_id]}"
    assert len(status) == queued
