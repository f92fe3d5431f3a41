"""Reading the organising mailbox from a real IMAP server (Dovecot on 127.0.0.1, IMAPS)."""

from __future__ import annotations

import imaplib
import os
import shutil
import tempfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, unavailable
from imap_server import PASSWORD, USER, CuttingRelay, Dovecot, dovecot_binary
from sqlalchemy import func, select
from test_replies import SAMPLES, fill, sent  # noqa: F401  (the sent-wave fixture)
from test_waves import SETTINGS, sample  # noqa: F401

from engine.inbox.ingest import Ingester
from engine.inbox.sources import INGESTED_KEYWORD, ImapSource, parse_imap_url
from engine.store.models import inbound_table


@pytest.fixture
def dovecot():
    if dovecot_binary() is None:
        unavailable("Dovecot is not installed (Debian: dovecot-imapd)")
    # Dovecot's own users must reach its files: not under pytest's private temporary folder.
    root = Path(tempfile.mkdtemp(prefix="campaign-dovecot-"))
    os.chmod(root, 0o755)
    server = Dovecot(root)
    try:
        server.start()
    except RuntimeError as exc:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"Dovecot would not start: {exc}")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def source(server: Dovecot, port: int | None = None, **kw) -> ImapSource:
    return ImapSource(parse_imap_url(server.url(port), PASSWORD), ca_file=str(server.ca_file), **kw)


def padded(number: int) -> bytes:
    """A member's message with some bulk to it, so a fetch spans many packets."""
    message = EmailMessage()
    message["From"] = f"Member {number} <member{number}@members.example.org>"
    message["To"] = "organising@union.example"
    message["Subject"] = f"Question {number}"
    message["Message-ID"] = f"<question-{number}@members.example.org>"
    message.set_content(f"Question number {number}.\n" + ("Some words about my school. " * 800))
    return message.as_bytes()


def stored_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(inbound_table)).scalar_one()


def flagged(server: Dovecot, folder: str = "INBOX") -> tuple[int, int]:
    """(messages in the folder, those flagged as ingested)."""
    conn = server.client()
    try:
        typ, data = conn.select(folder)
        total = int(data[0])
        typ, found = conn.search(None, "KEYWORD", INGESTED_KEYWORD)
        return total, len(found[0].split())
    finally:
        conn.logout()


def test_new_messages_are_ingested_flagged_and_never_read_twice(sent, dovecot):  # noqa: F811
    engine, letters = sent
    dovecot.append([fill(name, letters[name]) for name in SAMPLES])
    result = Ingester(engine, SETTINGS).ingest(source(dovecot))
    assert result.interrupted is None
    assert (result.stored, result.duplicates) == (len(SAMPLES), 0)
    assert result.kinds["bounce"] == 2 and result.kinds["complaint"] == 1 and result.follow_ups >= 10
    assert flagged(dovecot) == (len(SAMPLES), len(SAMPLES))
    # Opening messages in a mail client (\Seen) does not hide them from ingest; the keyword does.
    again = Ingester(engine, SETTINGS).ingest(source(dovecot))
    assert (again.read, again.stored) == (0, 0)
    dovecot.append([padded(1)])
    later = Ingester(engine, SETTINGS).ingest(source(dovecot))
    assert (later.read, later.stored) == (1, 1)


def test_a_connection_dropped_mid_fetch_loses_nothing_and_duplicates_nothing(sent, dovecot):  # noqa: F811
    engine, _ = sent
    messages = [padded(n) for n in range(40)]
    dovecot.append(messages)
    relay = CuttingRelay(dovecot.port, limit=300_000)  # about a third of the folder
    try:
        cut = Ingester(engine, SETTINGS).ingest(source(dovecot, relay.port, batch=5))
    finally:
        relay.close()
    assert relay.cut.is_set()
    assert cut.interrupted and "connection lost" in cut.interrupted
    assert 0 < cut.stored < 40
    rest = Ingester(engine, SETTINGS).ingest(source(dovecot))
    assert rest.interrupted is None
    # Stored but not yet flagged when the line went: read again, recorded once.
    assert cut.stored + rest.stored == 40
    assert rest.read == 40 - cut.stored + rest.duplicates
    assert stored_count(engine) == 40
    assert flagged(dovecot) == (40, 40)


def test_move_to_files_each_message_away_once_stored(sent, dovecot):  # noqa: F811
    engine, letters = sent
    conn = dovecot.client()
    assert conn.create("Processed")[0] == "OK"
    conn.logout()
    dovecot.append([fill(name, letters[name]) for name in ("fwd-gmail-en", "bounce-verp", "newsletter")])
    result = Ingester(engine, SETTINGS).ingest(source(dovecot, move_to="Processed"))
    assert result.stored == 3
    assert flagged(dovecot, "INBOX") == (0, 0)
    assert flagged(dovecot, "Processed")[0] == 3


def test_cli_reads_the_password_from_the_environment_and_refuses_a_wrong_one(sent, dovecot, db_url):  # noqa: F811
    from engine.cli import main

    engine, letters = sent
    dovecot.append([fill("fwd-yahoo", letters["fwd-yahoo"])])
    env = {
        "CAMPAIGN_TEMPLATES": str(ROOT / "templates"),
        "CAMPAIGN_SECRET": SETTINGS.secret,
        "IMAP_CA_FILE": str(dovecot.ca_file),
        "IMAP_PASSWORD": PASSWORD,
    }
    runner = CliRunner()
    ok = runner.invoke(main, ["--db", db_url, "replies", "ingest", "--imap", dovecot.url()], env=env)
    assert ok.exit_code == 0, ok.output
    assert "1 stored (1 reply)" in ok.output
    wrong = runner.invoke(
        main,
        [
            "--db",
            db_url,
            "replies",
            "ingest",
            "--imap",
            f"imaps://{USER}:wrong@127.0.0.1:{dovecot.port}/INBOX",
        ],
        env=env,
    )
    assert wrong.exit_code == 2
    assert "the server refused" in wrong.output and "Traceback" not in wrong.output
    untrusted = runner.invoke(
        main, ["--db", db_url, "replies", "ingest", "--imap", dovecot.url()], env={**env, "IMAP_CA_FILE": ""}
    )
    assert untrusted.exit_code == 2 and "TLS failed" in untrusted.output
    assert isinstance(imaplib.IMAP4.abort("x"), imaplib.IMAP4.error)
