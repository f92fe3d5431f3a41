"""Benchmark: launch a wave of N members and compare with Jinja2's render-only speed.

Sets up N synthetic members resolved to MPs (through the same import and
resolve code, against a local fake postcodes.io), creates an MP wave with the
bundled templates, and launches it. Prints letters/s end to end (render the
letter text and HTML, inline CSS once, store letters and queue invitations),
the ratio to rendering the same templates with Jinja2 alone in the same run,
peak memory and database bytes per letter. For the record it also prints
what premailer costs run on every message, and what building an invitation
email costs at send time.

    python bench/bench_launch.py --members 100000
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_import_resolve import serve_fake_postcodes_io, write_members  # noqa: E402
from results import stage  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from engine.letters.launch import idle_core, launch_wave  # noqa: E402
from engine.letters.merge import member_context, mp_target, paragraphs_html  # noqa: E402
from engine.letters.render import WaveRenderer, freeze_templates  # noqa: E402
from engine.letters.similarity import similar_letters  # noqa: E402
from engine.letters.templating import compile_template, inline_css  # noqa: E402
from engine.letters.waves import WaveSpec, create_wave, get_wave  # noqa: E402
from engine.lookup.http import JsonClient  # noqa: E402
from engine.lookup.postcodes_io import PostcodesIO  # noqa: E402
from engine.lookup.resolve import resolve_members  # noqa: E402
from engine.mail.outbox import queued_messages  # noqa: E402
from engine.members.importer import import_members  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.store.db import init_db, open_engine  # noqa: E402
from engine.store.models import member_table, mp_table, postcode_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def database_bytes(engine, db_path: Path) -> int:
    """The database's size on disk: the SQLite file and its log, or PostgreSQL's database."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    wal = Path(f"{db_path}-wal")
    return db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def set_up(n: int, db: str | None) -> tuple[Any, Settings, Path]:
    """N members imported and resolved to MPs, and a draft MP wave "bench": (engine, settings, folder)."""
    work = Path(tempfile.mkdtemp(prefix="campaign-bench-launch-"))
    write_members(work / "members.csv", n, 0.6)

    queue: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve_fake_postcodes_io, args=(queue, 0.0), daemon=True)
    server.start()
    port = queue.get(timeout=10)
    db_path = work / "bench.db"
    engine = open_engine(db or f"sqlite:///{db_path}")
    if db:
        with engine.begin() as conn:
            SQLModel.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    init_db(engine)
    import_members(engine, work / "members.csv")
    resolve_members(engine, PostcodesIO(JsonClient("postcodes.io", f"http://127.0.0.1:{port}")))
    server.terminate()
    with engine.begin() as conn:
        seats = conn.execute(
            select(postcode_table.c.constituency_code, postcode_table.c.constituency_name).distinct()
        ).all()
        conn.execute(
            mp_table.insert(),
            [
                {
                    "constituency_code": code,
                    "constituency_name": name,
                    "vacant": False,
                    "name": f"MP for {name}",
                    "party": "Party",
                    "email": f"mp.{code.lower()}@parliament.example",
                    "address_as": "Ms Example",
                    "postal_address": "House of Commons\nLondon\nSW1A 0AA",
                    "source": "csv",
                }
                for code, name in seats
            ],
        )
    resolve_members(engine, None)
    print(f"set up {n:,} members in {len(seats)} constituencies")

    os.chdir(ROOT)
    # A throwaway link secret for this run: the engine has no default.
    settings = Settings.from_env({"CAMPAIGN_SECRET": secrets.token_urlsafe(48)})
    create_wave(engine, "bench", WaveSpec(target="mp", letter="mp-inspection", invite="invitation"), settings)
    return engine, settings, work


def render_all_rate(renderer: WaveRenderer, contexts: list[dict[str, Any]]) -> float:
    """Letters/s of Jinja2 alone rendering every template a letter's life uses, once each: the
    letter, the invitation's subject, text and HTML, and the HTML letter in its layout."""
    t = time.perf_counter()
    for context in contexts:
        _, text = renderer.letter(context)
        renderer.invitation_subject(context)
        renderer.invitation(context)
        renderer.layout.render(
            {**context["letter"], "reference_in_text": False},
            context["member"],
            context["target"],
            paragraphs_html(text, renderer.paragraph_style),
        )
    return len(contexts) / (time.perf_counter() - t)


def mailmerge_command() -> str | None:
    """The mailmerge CLI (pyproject's `bench` extra), beside this Python or on the PATH."""
    return shutil.which(
        "mailmerge", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    )


def mailmerge_rate(letter_source: str, contexts: list[dict[str, Any]], work: Path) -> float | None:
    """Letters/s of the mailmerge CLI merging our letter for the same members, in a dry run.

    Our template becomes its template (member.name → member_name, the subject block a SUBJECT
    header, the letter from the member to the MP), and each member's context a CSV row.
    --no-limit merges every row; the dry run sends nothing and prints each message, here to
    /dev/null. None (and says why) when mailmerge is not installed.
    """
    command = mailmerge_command()
    if command is None:
        print("mailmerge:       not installed (pip install -e '.[bench]'): its anchor is left out")
        return None
    blocks = dict(re.findall(r"{%-?\s*block (\w+)\s*-?%}(.*?){%-?\s*endblock\s*-?%}", letter_source, re.S))

    def flat(text: str) -> str:
        return re.sub(r"\b(member|target|campaign)\.(\w+)", r"\1_\2", text)

    template = work / "mailmerge_template.txt"
    template.write_text(
        "TO: {{target_name}} <{{target_email}}>\n"
        "FROM: {{member_name}} <{{member_email}}>\n"
        f"SUBJECT: {flat(blocks['subject']).strip()}\n\n{flat(blocks['body']).strip()}\n",
        encoding="utf-8",
    )
    database = work / "mailmerge_database.csv"
    with database.open("w", newline="", encoding="utf-8") as out:
        writer = None
        for context in contexts:
            row = {
                f"{part}_{key}": "" if value is None else value
                for part in ("member", "target", "campaign")
                for key, value in context[part].items()
                if not isinstance(value, dict)
            }
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
    config = work / "mailmerge_server.conf"
    # Read even in a dry run; nothing connects to it.
    config.write_text("[smtp_server]\nhost = 127.0.0.1\nport = 25\n", encoding="utf-8")
    arguments = ["--template", template, "--database", database, "--config", config]
    t = time.perf_counter()
    subprocess.run(
        [command, *map(str, arguments), "--no-limit", "--dry-run", "--output-format", "raw"],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return len(contexts) / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument(
        "--db", help="database URL, e.g. PostgreSQL (its tables are replaced; default: SQLite)"
    )
    args = parser.parse_args()
    n = args.members
    engine, settings, work = set_up(n, args.db)
    db_path = work / "bench.db"

    # Render-only: the same compiled templates, Jinja2 alone, on contexts built beforehand.
    frozen = freeze_templates(get_wave(engine, "bench"), settings)
    renderer = WaveRenderer(frozen)
    with engine.connect() as conn:
        members = [dict(r._mapping) for r in conn.execute(select(member_table).limit(min(n, 20_000)))]
        mp = dict(conn.execute(select(mp_table).limit(1)).one()._mapping)
    target = mp_target(mp).context()
    contexts = [
        {
            "member": member_context(m, "Example School"),
            "target": target,
            "wave": {"name": "b", "reply_days": 10, "asks": None},
            "letter": {
                "reference": "ABCDE-FGHJK",
                "date": "1 January 2027",
                "subject": "s",
                "text": "t",
                "officials": "",
                "co_signatories": "",
            },
            "link": "http://x/l/t",
            "unsubscribe_link": "http://x/u/t",
            "campaign": settings.campaign_context(),
        }
        for m in members
    ]
    t = time.perf_counter()
    for context in contexts:
        renderer.letter(context)
        renderer.invitation_subject(context)
    render_only = len(contexts) / (time.perf_counter() - t)
    render_before = render_all_rate(renderer, contexts)

    sqlite = not args.db
    size_before = database_bytes(engine, db_path)
    t = time.perf_counter()
    # One process: the same path at every size, so the growth column compares like with like.
    result = launch_wave(engine, "bench", settings, parallel=False)
    launch_s = time.perf_counter() - t
    rate = result.created / launch_s
    # The anchor again, after: the machine is shared, and its load can change during a launch.
    render_after = render_all_rate(renderer, contexts)
    render_all = (render_before + render_after) / 2
    mailmerge = mailmerge_rate(frozen["letter"], contexts, work)
    with engine.connect() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        # Part of the launch above; timed again alone for the record.
        t = time.perf_counter()
        similar = similar_letters(conn, get_wave(conn, "bench")["id"], settings.similar_warn)
        similar_s = time.perf_counter() - t
    size_after = database_bytes(engine, db_path)
    # The same members again in a second wave, merged in a worker process beside this one. (Its
    # letters go into tables already holding the first wave's: no help to it.)
    create_wave(
        engine, "bench 2", WaveSpec(target="mp", letter="mp-inspection", invite="invitation"), settings
    )
    t = time.perf_counter()
    two = launch_wave(engine, "bench 2", settings, parallel=True)
    two_s = time.perf_counter() - t
    two_rate = two.created / two_s
    render_last = render_all_rate(renderer, contexts)
    two_anchor = (render_after + render_last) / 2
    print(
        f"launch:          {result.created:,} letters in {launch_s:.2f} s = {rate:,.0f} letters/s "
        f"(render text and HTML, CSS inlined once, letters stored, invitations queued)"
    )
    print(
        f"two processes:   {two.created:,} letters in {two_s:.2f} s = {two_rate:,.0f} letters/s "
        f"({two_rate / two_anchor:.0%} of render-all then, against {rate / render_all:.0%} in one process); "
        f"a launch now would use {'two' if idle_core() else 'one'} (load average {os.getloadavg()[0]:.1f} "
        f"on {len(os.sched_getaffinity(0))} cores)"
    )
    print(
        f"similar text:    {similar_s:.2f} s of that ({len(similar)} target(s) warned of, "
        f"{similar_s / launch_s:.0%} of the launch)"
    )
    print(
        f"render only:     {render_only:,.0f} letters/s (Jinja2: letter subject and body, invitation subject)"
    )
    print(f"ratio:           {rate / render_only:.0%} of render-only")
    stage(
        "launch" if sqlite else "launch (PostgreSQL)",
        n,
        result.created,
        launch_s,
        anchor="Jinja2 rendering every template a letter needs",
        anchor_per_s=render_all,
        **(
            {"second_anchor": "mailmerge CLI dry run", "second_anchor_per_s": round(mailmerge, 1)}
            if mailmerge
            else {}
        ),
    )
    stage(
        "launch, 2 processes" if sqlite else "launch, 2 processes (PG)",
        n,
        two.created,
        two_s,
        anchor="Jinja2 rendering every template a letter needs",
        anchor_per_s=two_anchor,
    )
    print(
        f"render all:      {render_all:,.0f} letters/s (also the HTML letter and both invitation parts; "
        f"{render_before:,.0f} before the launch, {render_after:,.0f} after); "
        f"launch is {rate / render_all:.0%} of that"
    )
    if mailmerge:
        print(
            f"mailmerge:       {mailmerge:,.0f} letters/s (its CLI, dry run, the same letter and members); "
            f"launch is {rate / mailmerge:.1f}× that"
        )
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"peak memory:     {peak_mb():.0f} MB in this process, {children:.0f} MB in the largest worker "
        "(the fake postcodes.io server included)"
    )
    print(
        f"database:        {(size_after - size_before) / max(result.created, 1):,.0f} bytes per letter "
        "(letter text and HTML, frozen target and member, queued invitation)"
    )

    # For the record: why CSS is inlined once per wave, not per message.
    html_source = frozen["invite_html"]
    original = (ROOT / "templates/email/invitation.html").read_text()
    not_inlined = compile_template(original, "invitation.html", html=True)
    sample = contexts[:200]
    t = time.perf_counter()
    for context in sample:
        inline_css(not_inlined.render(context), "x")
    premailer_each = len(sample) / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(20):
        inline_css(original, "x")
    inline_once = (time.perf_counter() - t) / 20
    print(
        f"premailer:       {premailer_each:,.0f} messages/s if run on every message; "
        f"{inline_once * 1000:.0f} ms once per wave ({len(html_source):,} bytes inlined)"
    )
    t = time.perf_counter()
    built = 0
    for message in queued_messages(engine, settings):
        len(message.data)
        built += 1
        if built == 2000:
            break
    print(
        f"send-time build: {built / (time.perf_counter() - t):,.0f} invitation emails/s (render both parts, "
        "build and serialise)"
    )

    # Issue 16's goals; the growth from 10k to 100k is read off make bench's table.
    failures = []
    if rate / render_all < 0.8:
        failures.append("under 80% of rendering every template a letter needs")
    if mailmerge and rate / mailmerge < 3:
        failures.append("under 3× the mailmerge CLI")
    if peak_mb() > 400:
        failures.append("peak memory over 400 MB")
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    if not failures:
        print("all targets met")
    engine.dispose()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
