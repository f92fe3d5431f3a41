"""Outages: postcodes.io failing, the SMTP relay going away, the database dropped or locked.

Each one: the command does what it can, says in one line what it could not
(no traceback, no SQL, no members' data), and a later run finishes the job.
IMAP dropped mid-fetch is in test_imap.py; kill -9 of every long command is in
test_faults.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from conftest import PG_URL, ROOT, TEST_SECRET
from smtp_server import SmtpServer
from sqlalchemy import func, select
from test_faults import SEATS, add_mps, bulk_answer, seat, write_members_csv
from test_send import launched, no_sleep, statuses  # noqa: F401  (the launched-wave fixture)
from test_waves import SETTINGS, sample  # noqa: F401

from engine.errors import CampaignError
from engine.mail.send import send_outbox, set_paused
from engine.mail.smtp import SmtpTransport
from engine.store.models import member_table, utcnow


class FlakyPostcodesIO:
    """postcodes.io's bulk endpoint that misbehaves on cue for batches holding a given postcode:
    `behaviour[postcode]` is "500" (always), "429" (once, then answers), or "slow" (answers
    after `slow` seconds, past the client's timeout)."""

    def __init__(self, slow: float = 2.0):
        self.behaviour: dict[str, str] = {}
        self.slow = slow
        self.requests = 0
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                flaky.requests += 1
                asked = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["postcodes"]
                cues = {flaky.behaviour.get(pc) for pc in asked}
                if "500" in cues:
                    self._reply(500, {"status": 500, "error": "Internal server error"})
                    return
                if "429" in cues:
                    for pc in asked:
                        flaky.behaviour.pop(pc, None)  # refused once: the retry is answered
                    self._reply(429, {"status": 429, "error": "Too many requests"}, {"Retry-After": "0"})
                    return
                if "slow" in cues:
                    time.sleep(flaky.slow)
                self._reply(200, bulk_answer(asked))

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # the client gave up on a slow answer: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FlakyPostcodesIO:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def postcodes_of(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(set(conn.execute(select(member_table.c.postcode)).scalars()))


def mp_statuses(engine) -> dict[str, int]:
    m = member_table.c
    with engine.connect() as conn:
        return dict(conn.execute(select(m.mp_status, func.count()).group_by(m.mp_status)).all())


def test_resolve_through_500s_429s_and_a_slow_postcodes_io_finishes_what_it_can_and_a_rerun_completes(
    cli, engine, db_url, tmp_path
):
    write_members_csv(tmp_path / "members.csv")
    add_mps(db_url)
    assert cli("members", "import", str(tmp_path / "members.csv")).exit_code == 0
    postcodes = postcodes_of(engine)
    env = {"CAMPAIGN_HTTP_TRIES": "2", "CAMPAIGN_HTTP_BACKOFF": "0", "CAMPAIGN_HTTP_TIMEOUT": "0.5"}
    with FlakyPostcodesIO() as flaky:
        # Batches of 100 in postcode order: one answers 500 every time, one is too slow every
        # time, one is refused with 429 once and answered on the retry.
        flaky.behaviour = {postcodes[5]: "500", postcodes[150]: "slow", postcodes[250]: "429"}
        first = cli("resolve", "--json", env={**env, "POSTCODES_IO_URL": flaky.url})
        assert first.exit_code == 0, first.output
        summary = json.loads(first.stdout)
        # The two failing batches' members wait; everyone else is resolved, the 429's batch too.
        failing = {p for p in postcodes[:100]} | {p for p in postcodes[100:200]}
        with engine.connect() as conn:
            waiting = conn.execute(
                select(func.count()).select_from(member_table).where(member_table.c.postcode.in_(failing))
            ).scalar_one()
        assert summary["network"] == "unavailable"
        assert mp_statuses(engine) == {"resolved": 3000 - waiting, "pending": waiting}
        text = cli("resolve", env={**env, "POSTCODES_IO_URL": flaky.url})
        assert f"{waiting} member(s) marked to look up on the next run" in text.stdout
        assert "re-run `campaign resolve` to finish" in text.stdout
        assert "Traceback" not in text.output
        # postcodes.io is well again: the next run asks only for what is missing, and completes.
        flaky.behaviour = {}
        asked_before = flaky.requests
        done = cli("resolve", "--json", env={**env, "POSTCODES_IO_URL": flaky.url})
        assert json.loads(done.stdout)["network"] == "online"
        assert flaky.requests - asked_before == 2
    assert mp_statuses(engine) == {"resolved": 3000}
    assert len({seat(p) for p in postcodes}) <= SEATS


def test_resolve_with_postcodes_io_down_marks_everyone_to_look_up_and_a_later_run_completes(
    cli, engine, db_url, tmp_path
):
    write_members_csv(tmp_path / "members.csv")
    add_mps(db_url)
    cli("members", "import", str(tmp_path / "members.csv"))
    env = {"CAMPAIGN_HTTP_TRIES": "2", "CAMPAIGN_HTTP_BACKOFF": "0"}
    down = cli("resolve", env={**env, "POSTCODES_IO_URL": "http://127.0.0.1:9"})
    assert down.exit_code == 0, down.output
    assert "3000 member(s) marked to look up on the next run" in down.stdout
    assert mp_statuses(engine) == {"pending": 3000}
    with FlakyPostcodesIO() as up:
        # Answering 500 to everything: a few failed batches in a row and the run stops asking
        # (30 batches here), rather than spend every batch's tries on a service that is down.
        up.behaviour = dict.fromkeys(postcodes_of(engine), "500")
        failing = cli("resolve", env={**env, "POSTCODES_IO_URL": up.url})
        assert "postcodes.io: HTTP 500 after 2 tries" in failing.stdout
        assert up.requests <= 2 * (3 + 4)  # tries × (failures in a row + requests in flight)
        assert mp_statuses(engine) == {"pending": 3000}
        up.behaviour = {}
        cli("resolve", env={**env, "POSTCODES_IO_URL": up.url})
    assert mp_statuses(engine) == {"resolved": 3000}


def test_smtp_relay_gone_mid_batch_keeps_the_rest_queued_and_the_next_run_sends_each_once(
    launched,  # noqa: F811
):
    sink = SmtpServer().__enter__()  # stopped by the test itself, mid-batch
    sent_before_outage = 10

    def relay_goes_away(outcome: str) -> None:
        if outcome == "sent" and len(sink.recorder.received) == sent_before_outage:
            sink.controller.stop()

    cut = send_outbox(
        launched,
        SETTINGS,
        SmtpTransport(sink.url, timeout=2),
        rate=1000,
        sleep=no_sleep,
        on_message=relay_goes_away,
    )
    assert cut.sent == sent_before_outage
    # Ten refused connections in a row pause sending (a dead relay must not burn the queue).
    assert cut.paused and "cannot connect" in cut.paused
    assert statuses(launched) == {"sent": 10, "queued": 30}
    # The relay is back on the same address; staff resume, and the messages tried during the
    # outage go once their retry time has come.
    with SmtpServer(port=sink.port) as back:
        with pytest.raises(CampaignError, match="sending is paused"):
            send_outbox(launched, SETTINGS, SmtpTransport(back.url), rate=1000, sleep=no_sleep)
        set_paused(launched, None)
        later = send_outbox(
            launched,
            SETTINGS,
            SmtpTransport(back.url),
            rate=1000,
            sleep=no_sleep,
            clock=lambda: utcnow() + timedelta(minutes=5),
        )
    assert later.sent == 30
    assert statuses(launched) == {"sent": 40}
    ids = [r.message["Message-ID"] for r in sink.recorder.received + back.recorder.received]
    assert len(ids) == len(set(ids)) == 40


def campaign(db_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "--db", db_url, *args],
        cwd=ROOT,
        env={**os.environ, "CAMPAIGN_SECRET": TEST_SECRET, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_line_error(stderr: str) -> str:
    """The error, alone on the last line (after what the command said before it failed)."""
    lines = stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("Error")] == lines[-1:], stderr
    assert "Traceback" not in stderr
    for leak in ("INSERT", "SELECT", "UPDATE", "@members.example.org", "Member1"):
        assert leak not in stderr, stderr
    return lines[-1]


def member_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(member_table)).scalar_one()


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL schema whose connections carry a name of their own, so a test can find
    (and cut) the command's connection among everyone else's."""
    from conftest import _pg_problem, unavailable

    from engine.store.db import init_db, open_engine

    problem = _pg_problem()
    if problem:
        unavailable(problem)
    schema = f"ce_outage_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    engine = open_engine(url)
    init_db(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_postgresql_connection_dropped_mid_import_is_one_line_and_a_rerun_completes(pg_url, tmp_path):
    from engine.store.db import open_engine

    write_members_csv(tmp_path / "members.csv")
    name = pg_url.rsplit("application_name=", 1)[1]
    process = campaign(pg_url, "members", "import", str(tmp_path / "members.csv"))
    terminated = 0
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        deadline = time.monotonic() + 30
        while not terminated and process.poll() is None and time.monotonic() < deadline:
            # Its connection once it is writing members (the schema check before is read-only).
            terminated = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND state <> 'idle' AND query ILIKE %s",
                (name, "%member%"),
            ).fetchone()[0]
            time.sleep(0.01)
    _, stderr = process.communicate(timeout=60)
    assert terminated, "the import finished before its connection could be cut"
    assert process.returncode == 2, stderr
    line = one_line_error(stderr)
    assert line.startswith("Error: database: the connection was lost"), line
    assert line.endswith("re-run to continue"), line
    engine = open_engine(pg_url)
    assert member_count(engine) == 0  # one transaction: nothing half-written
    again = campaign(pg_url, "members", "import", str(tmp_path / "members.csv"))
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "3000 created" in out
    assert member_count(engine) == 3000
    engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    from engine.store.db import init_db, open_engine

    path = tmp_path / "campaign.db"
    engine = open_engine(f"sqlite:///{path}")
    init_db(engine)
    engine.dispose()
    return path


def test_sqlite_locked_by_another_writer_waits_for_it_then_imports(sqlite_db, tmp_path):
    from engine.store.db import open_engine

    write_members_csv(tmp_path / "members.csv")
    holder = sqlite3.connect(sqlite_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    process = campaign(f"sqlite:///{sqlite_db}", "members", "import", str(tmp_path / "members.csv"))
    time.sleep(3)  # the command is up and waiting on the lock
    assert process.poll() is None
    holder.execute("COMMIT")
    holder.close()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "3000 created" in out
    engine = open_engine(f"sqlite:///{sqlite_db}")
    assert member_count(engine) == 3000
    engine.dispose()


def test_sqlite_locked_past_its_timeout_is_one_line_and_a_rerun_completes(sqlite_db, tmp_path):
    from engine.store.db import open_engine

    write_members_csv(tmp_path / "members.csv")
    url = f"sqlite:///{sqlite_db}?timeout=1"
    holder = sqlite3.connect(sqlite_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        process = campaign(url, "members", "import", str(tmp_path / "members.csv"))
        _, stderr = process.communicate(timeout=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert process.returncode == 2, stderr
    line = one_line_error(stderr)
    assert line.startswith("Error: database: locked by another program"), line
    assert line.endswith("re-run to continue"), line
    engine = open_engine(url)
    assert member_count(engine) == 0
    again = campaign(url, "members", "import", str(tmp_path / "members.csv"))
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert member_count(engine) == 3000
    engine.dispose()


def test_postgresql_connection_dropped_mid_send_sends_nothing_twice_and_a_rerun_completes(pg_url, tmp_path):
    from test_waves import MP_WAVE, load_sample

    from engine.letters.launch import launch_wave
    from engine.letters.waves import create_wave
    from engine.store.db import open_engine
    from engine.store.models import outbox_table

    engine = open_engine(pg_url)
    load_sample(engine, tmp_path)
    create_wave(engine, "MPs", MP_WAVE, SETTINGS)
    launch_wave(engine, "MPs", SETTINGS)
    engine.dispose()  # its pooled connections carry the name too: only the worker's are cut
    name = pg_url.rsplit("application_name=", 1)[1]
    with SmtpServer() as sink:
        worker = campaign(pg_url, "send", "--once", "--rate", "20", env={"SMTP_URL": sink.url})
        deadline = time.monotonic() + 60
        while len(sink.recorder.received) < 5 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
            )
        _, stderr = worker.communicate(timeout=60)
        assert worker.returncode == 2, stderr
        assert one_line_error(stderr).startswith("Error: database: the connection was lost")
        rerun = campaign(pg_url, "send", "--once", "--rate", "1000", env={"SMTP_URL": sink.url})
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        with engine.connect() as conn:
            status = dict(conn.execute(select(outbox_table.c.message_id, outbox_table.c.status)).all())
        arrived = [r.message["Message-ID"] for r in sink.recorder.received]
    engine.dispose()
    in_doubt = [mid for mid, state in status.items() if state == "uncertain"]
    assert len(in_doubt) <= 1
    assert set(status.values()) <= {"sent", "uncertain"}
    assert len(arrived) == len(set(arrived)), "no message arrived twice"
    assert set(arrived) >= {mid for mid, state in status.items() if state == "sent"}
