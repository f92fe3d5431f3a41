"""Benchmark: deliver N queued invitations to a local SMTP server (aiosmtpd, its own process).

Prints messages/s for one `campaign send` worker, for several workers at once on
PostgreSQL (with --pg URL; --workers 1 2 4), and for a bare smtplib loop sending the
same number of already-built messages over one connection, measured in the same
run (alternated, best of --rounds each, as the machine is shared); the target
is at least 70% of the bare loop. The PostgreSQL workers are timed from when all
have started (Python imported), and each run states the CPU each message cost the
workers, the SMTP sink and the database's backends: × messages/s, the cores kept
busy, which is what more workers cannot exceed.

With --letters it also sends the members' letters to their (one) MP, once with
no daily cap and once with a cap above their number, so that every letter takes
its slot in `target_day`: what flood control costs a message.

    python bench/bench_send.py --messages 20000 --pg postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formataddr
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_import_resolve import write_members  # noqa: E402
from results import send_workers, stage  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from engine.letters.launch import launch_wave  # noqa: E402
from engine.letters.waves import WaveSpec, create_wave  # noqa: E402
from engine.mail.outbox import queued_messages  # noqa: E402
from engine.mail.send import send_outbox  # noqa: E402
from engine.mail.smtp import SmtpTransport  # noqa: E402
from engine.members.importer import import_members  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.store.db import init_db, open_engine  # noqa: E402
from engine.store.models import (  # noqa: E402
    letter_table,
    member_table,
    mp_table,
    outbox_table,
    utcnow,
    wave_table,
)

# A throwaway link secret for this run: the engine has no default, and no link outlives the bench.
BENCH_SECRET = secrets.token_urlsafe(48)

ROOT = Path(__file__).resolve().parent.parent


def serve_smtp(port: int, ready: multiprocessing.Event, log: str | None = None) -> None:
    """A local SMTP server taking any number of connections; with `log`, each message's
    Message-ID is appended to that file, to count what arrived and what arrived twice."""
    from aiosmtpd.controller import Controller

    received = open(log, "a", buffering=1) if log else None  # noqa: SIM115  (lives as long as the server)

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            if received is not None:
                head = envelope.content.split(b"\r\n\r\n", 1)[0]
                for line in head.split(b"\r\n"):
                    if line[:11].lower() == b"message-id:":
                        received.write(line[11:].strip().decode("ascii", "replace") + "\n")
                        break
            return "250 OK"

    Controller(Sink(), hostname="127.0.0.1", port=port).start()
    ready.set()
    while True:
        time.sleep(3600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, n: int, work: Path) -> None:
    engine = open_engine(url)
    if not url.startswith("sqlite"):
        from sqlmodel import SQLModel

        from engine.store import models  # noqa: F401

        with engine.begin() as conn:
            SQLModel.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    init_db(engine)
    write_members(work / "members.csv", n, 1.0)
    import_members(engine, work / "members.csv")
    with engine.begin() as conn:
        conn.execute(
            mp_table.insert().values(
                constituency_code="E14000001",
                constituency_name="Seat",
                vacant=False,
                name="A Member MP",
                email="mp@parliament.example",
                address_as="Ms Member",
                source="csv",
            )
        )
        conn.execute(
            member_table.update().values(
                mp_status="resolved", constituency_code="E14000001", constituency_name="Seat"
            )
        )
    settings = Settings.from_env({"CAMPAIGN_SECRET": BENCH_SECRET})
    create_wave(engine, "bench", WaveSpec(target="mp", letter="mp-inspection", invite="invitation"), settings)
    launch_wave(engine, "bench", settings)
    engine.dispose()


def queue_letters(url: str, cap: int) -> None:
    """Every member asks for their letter to be sent (their invitations have gone)."""
    engine = open_engine(url)
    now = utcnow()
    lt = letter_table.c
    with engine.begin() as conn:
        conn.execute(outbox_table.update().values(status="sent"))
        rows = conn.execute(select(lt.id, lt.reference, lt.subject, lt.target_name, lt.target_email)).all()
        conn.execute(letter_table.update().values(state="queued", decided_at=now))
        conn.execute(
            outbox_table.insert(),
            [
                {
                    "letter_id": letter_id,
                    "kind": "letter",
                    "to_addr": formataddr((name, email)),
                    "subject": f"{subject} [Ref: {reference}]",
                    "message_id": f"<{reference}.letter@union.example>",
                    "status": "queued",
                    "attempts": 0,
                    "created_at": now,
                }
                for letter_id, reference, subject, name, email in rows
            ],
        )
        conn.execute(wave_table.update().values(daily_cap=cap))
    engine.dispose()


def queued(url: str) -> int:
    engine = open_engine(url)
    with engine.connect() as conn:
        count = conn.execute(
            select(func.count()).select_from(outbox_table).where(outbox_table.c.status == "queued")
        ).scalar_one()
    engine.dispose()
    return count


WORKER = """
import os, sys
from engine.mail.send import send_outbox
from engine.mail.smtp import SmtpTransport
from engine.settings import Settings
from engine.store.db import open_engine
settings = Settings.from_env(os.environ)
engine = open_engine(settings.db_url)
# Started (Python and the engine imported) before the clock starts: what is timed is sending.
before = os.times()
print("ready", flush=True)
sys.stdin.readline()
result = send_outbox(engine, settings, SmtpTransport(settings.smtp_url), rate=1e6)
after = os.times()
print(after.user + after.system - before.user - before.system)  # CPU seconds, for the account
sys.exit(1 if result.failed else 0)
"""

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class BackendCpu(threading.Thread):
    """Samples the CPU of this database's PostgreSQL backends while the workers run (they end
    with their connections, so the last sample stands for each: up to `every` seconds short)."""

    def __init__(self, url: str, every: float = 0.1):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.seen: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        engine = open_engine(self.url)
        with engine.connect() as conn:
            while not self.done.is_set():
                pids = conn.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).scalars()
                for pid in pids:
                    self.seen[pid] = max(self.seen.get(pid, 0.0), cpu_seconds(pid))
                conn.rollback()
                self.done.wait(self.every)
        engine.dispose()

    def stop(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seen.values())


def pg_workers(url: str, n: int, work: Path, count: int) -> tuple[float, int, int, int, dict[str, float]]:
    """`count` sending processes at once on one PostgreSQL database, to a fresh sink:
    (messages/s, messages that arrived, Message-IDs that arrived more than once, left queued,
    CPU seconds used by the workers, the sink and the database's backends)."""
    prepare(url, n, work)
    log = work / f"received-{count}.txt"
    port = free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=serve_smtp, args=(port, ready, str(log)), daemon=True)
    sink.start()
    ready.wait(10)
    env = {
        **os.environ,
        "CAMPAIGN_DB": url,
        "SMTP_URL": f"smtp://127.0.0.1:{port}",
        "CAMPAIGN_SECRET": BENCH_SECRET,
    }
    # What `campaign send --once` runs, without its 1,000-a-second ceiling per worker.
    command = [sys.executable, "-c", WORKER]
    backends = BackendCpu(url)
    backends.start()
    sink_before = cpu_seconds(sink.pid)
    cpu = {"workers": 0.0}
    workers = [
        subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready", worker.stderr
    t = time.perf_counter()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    for worker in workers:
        output, errors = worker.communicate()
        if worker.returncode:
            print(f"a worker failed: {errors.strip().splitlines()[-1:]}")
        else:
            cpu["workers"] += float(output.split()[-1])
    elapsed = time.perf_counter() - t
    time.sleep(0.2)
    cpu["sink"] = cpu_seconds(sink.pid) - sink_before
    cpu["postgres backends"] = backends.stop()
    sink.terminate()
    ids = log.read_text().split()
    duplicates = len(ids) - len(set(ids))
    return len(ids) / elapsed, len(ids), duplicates, queued(url), cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="bare loop and worker runs, alternated")
    parser.add_argument("--pg", help="PostgreSQL URL for the several-worker runs (its tables are replaced)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 4], help="send processes at once on PostgreSQL"
    )
    parser.add_argument("--letters", action="store_true", help="also send letters, with and without a cap")
    args = parser.parse_args()
    n = args.messages
    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-send-"))
    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve_smtp, args=(port, ready), daemon=True)
    server.start()
    ready.wait(10)
    smtp_url = f"smtp://127.0.0.1:{port}"
    settings = Settings.from_env({"SMTP_URL": smtp_url, "CAMPAIGN_SECRET": BENCH_SECRET})

    sqlite_url = f"sqlite:///{work}/send.db"
    prepare(sqlite_url, n, work)
    engine = open_engine(sqlite_url)
    built = [(m.to, m.data) for m in queued_messages(engine, settings)]
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()

    # The machine is shared: alternate the two, and compare the best of each.
    bare_rates, worker_rates = [], []
    # CPU milliseconds per message (this process, the sink), the least of the rounds: a shared
    # machine makes the rates swing from round to round, the CPU each message costs far less.
    bare_cpu, worker_cpu, sink_cpu = [], [], []
    for round_number in range(1, args.rounds + 1):
        t, cpu, sink = time.perf_counter(), time.process_time(), cpu_seconds(server.pid)
        with smtplib.SMTP("127.0.0.1", port) as bare:
            for to, data in built:
                bare.sendmail("campaigns@union.example", [to], data)
        bare_rates.append(len(built) / (time.perf_counter() - t))
        bare_cpu.append((time.process_time() - cpu) * 1000 / len(built))
        sink_cpu.append((cpu_seconds(server.pid) - sink) * 1000 / len(built))
        copy = work / f"send-{round_number}.db"
        shutil.copy(work / "send.db", copy)
        engine = open_engine(f"sqlite:///{copy}")
        t, cpu, sink = time.perf_counter(), time.process_time(), cpu_seconds(server.pid)
        result = send_outbox(engine, settings, SmtpTransport(smtp_url), rate=1e6)
        worker_rates.append(result.sent / (time.perf_counter() - t))
        worker_cpu.append((time.process_time() - cpu) * 1000 / result.sent)
        sink_cpu.append((cpu_seconds(server.pid) - sink) * 1000 / result.sent)
        engine.dispose()
        print(
            f"round {round_number}: bare smtplib {bare_rates[-1]:,.0f} messages/s, "
            f"one worker {worker_rates[-1]:,.0f} messages/s ({result.sent:,} sent)"
        )
    bare_rate, one = max(bare_rates), max(worker_rates)
    print(f"bare smtplib:    {bare_rate:,.0f} messages/s ({len(built):,} built messages, one connection)")
    print(f"one worker:      {one:,.0f} messages/s on SQLite = {one / bare_rate:.0%} of bare")
    print(
        f"    CPU per message: bare loop {min(bare_cpu):.2f} ms, worker {min(worker_cpu):.2f} ms "
        f"(building included), sink {min(sink_cpu):.2f} ms (load average {os.getloadavg()[0]:.1f})"
    )
    stage(
        "send, one worker",
        n,
        n,
        n / one,
        anchor="bare smtplib, one connection",
        anchor_per_s=bare_rate,
    )

    if args.letters:
        # The receipts each sent letter queues are left queued: only the letters are timed.
        for name, cap in (("no cap", 0), ("capped", n + 1)):
            rates = []
            for round_number in range(1, args.rounds + 1):
                copy = work / f"letters-{cap}-{round_number}.db"
                shutil.copy(work / "send.db", copy)
                queue_letters(f"sqlite:///{copy}", cap)
                engine = open_engine(f"sqlite:///{copy}")
                t = time.perf_counter()
                result = send_outbox(engine, settings, SmtpTransport(smtp_url), rate=1e6, limit=n)
                rates.append(result.sent / (time.perf_counter() - t))
                assert result.held == 0 and result.sent == n, result
                engine.dispose()
            best = max(rates)
            print(
                f"letters, {name}: {best:,.0f} letters/s on SQLite = {best / bare_rate:.0%} of bare "
                "(letters carry their HTML letter too)"
            )

    server.terminate()
    if args.pg:
        for count in args.workers:
            rate, sent, duplicates, left, cpu = pg_workers(args.pg, n, work, count)
            send_workers(count, rate, sent, duplicates, left)
            print(
                f"{count} worker(s):     {rate:,.0f} messages/s on PostgreSQL; {sent:,} arrived, "
                f"{duplicates} twice, {left} left queued = {rate / bare_rate:.0%} of bare"
            )
            # CPU per message × messages a second = cores kept busy: on a machine of few cores,
            # what more workers can add.
            each = {name: seconds / max(sent, 1) for name, seconds in cpu.items()}
            print(
                "    CPU per message: "
                + ", ".join(f"{name} {ms * 1000:.2f} ms" for name, ms in each.items())
                + f"; × {rate:,.0f}/s = {sum(each.values()) * rate:.2f} cores busy"
                f" (of {os.cpu_count()}; load average {os.getloadavg()[0]:.1f})"
            )
    ok = one / bare_rate >= 0.7
    print("target met" if ok else "TARGET MISSED: one worker under 70% of the bare smtplib loop")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
