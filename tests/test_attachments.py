"""Files attached to a wave: refused or stored at `wave create|edit`, in the sent MIME, on paper."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import zipfile
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import docx
import pypdf
import pytest
import requests
from conftest import ROOT
from smtp_server import SmtpServer
from sqlalchemy import func, select
from test_send import no_sleep
from test_waves import EMPLOYER_WAVE, SETTINGS, load_sample
from test_web import Site

from engine.followup.drafts import draft_letter
from engine.followup.drafts import load_wave as load_followup_wave
from engine.letters.attachments import DOCX, PDF, safe_filename
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.documents import write_wave_pdfs
from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.mail.mime import attachment_part
from engine.mail.send import send_outbox
from engine.mail.smtp import SmtpTransport
from engine.store.models import attachment_table, letter_table, utcnow, wave_table

FRAMEWORK = ROOT / "data" / "risk-assessment-framework.pdf"
# Not plain ASCII, so its name goes in RFC 2231 form.
NOTES_NAME = "Évaluation des risques – notes.docx"


@pytest.fixture
def sample(engine, tmp_path):
    return load_sample(engine, tmp_path)


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The union's framework (a PDF), a DOCX of notes, and files that are neither."""
    notes = docx.Document()
    notes.add_heading("Notes for the inspection risk assessment", 1)
    notes.add_paragraph("Ask the staff first; record what they say.")
    notes.add_paragraph("A named person looks after staff well-being during the visit.", style="List Bullet")
    notes.add_paragraph("Review the assessment after every inspection.", style="List Bullet")
    (tmp_path / "in").mkdir()
    notes.save(tmp_path / "in" / NOTES_NAME)
    framework = tmp_path / "in" / "risk-assessment-framework.pdf"
    shutil.copy(FRAMEWORK, framework)
    spreadsheet = tmp_path / "in" / "figures.pdf"  # a zip, but no Word document inside
    with zipfile.ZipFile(spreadsheet, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    picture = tmp_path / "in" / "poster.docx"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    return {
        "framework": framework,
        "notes": tmp_path / "in" / NOTES_NAME,
        "xlsx": spreadsheet,
        "png": picture,
    }


def attachments_stored(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(attachment_table)).scalar_one()


def waves_named(engine, name: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(wave_table.c.name == name)).scalar_one()


def send_letters(engine, smtp, *members: str) -> list:
    """Send the invitations, then each member's letter as they confirmed it; what arrived after."""
    send_outbox(engine, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    smtp.recorder.received.clear()
    for member in members:
        found = letter_for_member(engine, "Employers", member)
        assert send_for_me(engine, SETTINGS, found, found.text, None)
    send_outbox(engine, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    return smtp.recorder.received


def attached(message: EmailMessage) -> list[tuple[str, str, bytes]]:
    return [(a.get_filename(), a.get_content_type(), a.get_content()) for a in message.iter_attachments()]


# ---- what a letter carries ---------------------------------------------------------------


def test_a_sent_letter_carries_each_attachment_byte_for_byte_and_the_receipt_only_names_them(
    sample, smtp, files
):
    spec = dataclasses.replace(EMPLOYER_WAVE, attach=[str(files["framework"]), str(files["notes"])])
    create_wave(sample, "Employers", spec, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    received = send_letters(sample, smtp, "M100001", "M100006")
    letters = [
        r for r in received if r.message["X-Campaign-Ref"] and ".receipt." not in r.message["Message-ID"]
    ]
    receipts = [r for r in received if ".receipt." in r.message["Message-ID"]]
    assert len(letters) == 2 and len(receipts) == 2
    for letter in letters:
        message = letter.message
        assert message.get_content_type() == "multipart/mixed"
        # The letter itself is still the text and HTML alternatives, first.
        assert "a copy is attached" in " ".join(message.get_body(("plain",)).get_content().split())
        assert attached(message) == [
            ("risk-assessment-framework.pdf", PDF, FRAMEWORK.read_bytes()),
            (NOTES_NAME, DOCX, files["notes"].read_bytes()),
        ]
    for receipt in receipts:
        assert attached(receipt.message) == []
        text = " ".join(receipt.message.get_body(("plain",)).get_content().split())
        assert (
            f"Attached: risk-assessment-framework.pdf (PDF, 23 KB), {NOTES_NAME} (DOCX, 36 KB) "
            "(sent with your letter; not attached again here)"
        ) in text.replace(f"({FRAMEWORK.stat().st_size // 1024} KB", "(23 KB")


def test_a_follow_up_goes_without_the_attachments_its_first_letter_carried(sample, smtp, files):
    create_wave(sample, "Employers", dataclasses.replace(EMPLOYER_WAVE, attach=[str(FRAMEWORK)]), SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    (first,) = [
        r for r in send_letters(sample, smtp, "M100001") if ".receipt." not in r.message["Message-ID"]
    ]
    assert [a.get_filename() for a in first.message.iter_attachments()] == ["risk-assessment-framework.pdf"]
    original = letter_for_member(sample, "Employers", "M100001").letter
    with sample.begin() as conn:
        conn.execute(letter_table.update().where(letter_table.c.id == original["id"]).values(state="replied"))
        wave = load_followup_wave(conn, original["wave_id"], SETTINGS)
        draft_letter(conn, wave, {**original, "state": "replied"}, "follow_up", SETTINGS, utcnow())
    smtp.recorder.received.clear()
    follow_up = letter_for_member(sample, "Employers", "M100001", kind="follow_up")
    assert send_for_me(sample, SETTINGS, follow_up, follow_up.text, None)
    send_outbox(sample, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    sent = [r for r in smtp.recorder.received if r.message["X-Campaign-Ref"] == follow_up.letter["reference"]]
    # Its invitation, the follow-up itself to the employer, and the member's receipt: none carries a file.
    (letter,) = [r for r in sent if r.rcpt_tos == [original["target_email"]]]
    (receipt,) = [r for r in sent if ".receipt." in r.message["Message-ID"]]
    assert len(sent) == 3 and all(attached(r.message) == [] for r in sent)
    assert "Attached:" not in receipt.message.get_body(("plain",)).get_content()


def test_invitations_carry_no_attachment(sample, smtp, files):
    spec = dataclasses.replace(EMPLOYER_WAVE, attach=[str(files["framework"])])
    create_wave(sample, "Employers", spec, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    send_outbox(sample, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    assert smtp.recorder.received
    assert all(attached(r.message) == [] for r in smtp.recorder.received)


def test_changing_the_file_after_create_or_launch_never_changes_what_is_sent(sample, smtp, files, tmp_path):
    original = files["framework"].read_bytes()
    create_wave(
        sample, "Employers", dataclasses.replace(EMPLOYER_WAVE, attach=[str(files["framework"])]), SETTINGS
    )
    files["framework"].write_bytes(b"%PDF-1.4 a different document altogether\n%%EOF\n")
    launch_wave(sample, "Employers", SETTINGS)
    files["framework"].unlink()
    (letter,) = [
        r for r in send_letters(sample, smtp, "M100001") if ".receipt." not in r.message["Message-ID"]
    ]
    assert attached(letter.message) == [("risk-assessment-framework.pdf", PDF, original)]


def test_a_launched_wave_keeps_its_attachments(cli, sample, files):
    create_wave(
        sample, "Employers", dataclasses.replace(EMPLOYER_WAVE, attach=[str(files["framework"])]), SETTINGS
    )
    launch_wave(sample, "Employers", SETTINGS)
    for option in (("--attach", str(files["notes"])), ("--detach", "risk-assessment-framework.pdf")):
        result = cli("wave", "edit", "Employers", *option)
        assert result.exit_code == 2
        assert "it can no longer be edited" in result.stderr
    assert attachments_stored(sample) == 1


def test_a_server_that_refuses_the_message_size_fails_the_letter_with_its_reason(sample, smtp, files):
    create_wave(
        sample, "Employers", dataclasses.replace(EMPLOYER_WAVE, attach=[str(files["framework"])]), SETTINGS
    )
    launch_wave(sample, "Employers", SETTINGS)
    send_outbox(sample, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)  # the invitations
    found = letter_for_member(sample, "Employers", "M100001")
    assert send_for_me(sample, SETTINGS, found, found.text, None)
    # A relay that takes at most 20,000 bytes: the letter with its 23 KB attachment is over it
    # (aiosmtpd refuses at MAIL FROM, from the SIZE= we declare).
    small = SmtpServer(data_size_limit=20_000)
    with small:
        result = send_outbox(sample, SETTINGS, SmtpTransport(small.url), rate=0, sleep=no_sleep)
    assert (result.sent, result.failed) == (0, 1)
    with sample.connect() as conn:
        state, reason = conn.execute(
            select(letter_table.c.state, letter_table.c.bounce_reason).where(
                letter_table.c.id == found.letter["id"]
            )
        ).one()
    assert state == "failed" and reason.startswith("552 ")


@pytest.mark.parametrize(
    "name, header",
    [
        ("framework.pdf", ' filename="framework.pdf"'),
        # Not plain ASCII: RFC 2231, in numbered pieces so that no line runs long.
        (NOTES_NAME, " filename*0*=utf-8''%C3%89valuation%20des%20risques%20%E2%80%93%20notes.d;\r\n filename*1*=ocx"),
    ],
)  # fmt: skip
def test_an_attachment_part_names_its_file_in_a_form_every_mail_program_reads(name, header):
    part = attachment_part(name, DOCX, b"PK\x03\x04 a document")
    assert f"Content-Disposition: attachment;\r\n{header}\r\n".encode() in part
    message = message_from_bytes(b"MIME-Version: 1.0\r\n" + part, policy=default)
    assert message.get_content_type() == DOCX
    assert (message.get_filename(), message.get_param("name")) == (name, name)
    assert message.get_content() == b"PK\x03\x04 a document"


# ---- what is refused ---------------------------------------------------------------------

CREATE = ("wave", "create", "Employers", "--target", "employer", "--letter", "employer-wellbeing")


@pytest.mark.parametrize(
    "file, env, error",
    [
        ("xlsx", {}, "Error: --attach: {path}: not a PDF or DOCX file (judged by its content, not its name); "
         "save it as PDF and attach that\n"),
        ("png", {}, "Error: --attach: {path}: not a PDF or DOCX file (judged by its content, not its name); "
         "save it as PDF and attach that\n"),
        ("missing", {}, "Error: --attach: {path}: no such file\n"),
        ("framework", {"CAMPAIGN_ATTACH_FILE_MAX_KB": "20"}, "Error: --attach: {path}: 23 KB, more than the 20 KB "
         "allowed for one file (CAMPAIGN_ATTACH_FILE_MAX_KB)\n"),
        ("notes", {"CAMPAIGN_ATTACH_MAX_KB": "50"}, f"Error: --attach: {NOTES_NAME}: the wave's attachments would "
         "come to {total} KB, more than the 50 KB a wave may carry (CAMPAIGN_ATTACH_MAX_KB); nothing was stored\n"),
    ],
)  # fmt: skip
def test_a_wrong_missing_or_too_big_file_is_refused_in_one_line_and_nothing_is_stored(
    cli, sample, files, tmp_path, file, env, error
):
    path = files.get(file, tmp_path / "in" / "nowhere.pdf")
    also = ("--attach", str(files["framework"])) if file == "notes" else ()
    result = cli(*CREATE, "--invite", "invitation", *also, "--attach", str(path), env=env)
    assert (result.exit_code, result.stdout) == (2, "")
    total = round((FRAMEWORK.stat().st_size + files["notes"].stat().st_size) / 1024)
    assert result.stderr == error.format(path=path, total=total)
    assert waves_named(sample, "Employers") == 0 and attachments_stored(sample) == 0
    # The same on a draft wave: its attachments stay as they were.
    assert cli(*CREATE, "--invite", "invitation", "--attach", str(files["framework"])).exit_code == 0
    result = cli("wave", "edit", "Employers", "--attach", str(path), env=env)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    shown = json.loads(cli("wave", "show", "Employers", "--json").stdout)
    assert [a["name"] for a in shown["attachments"]] == ["risk-assessment-framework.pdf"]


def test_a_damaged_or_locked_pdf_is_refused_when_attached(cli, sample, tmp_path):
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(b"%PDF-1.7\nthis is not a PDF body at all")
    result = cli(*CREATE, "--invite", "invitation", "--attach", str(damaged))
    assert result.exit_code == 2
    assert result.stderr == f"Error: --attach: {damaged}: a damaged PDF file: it cannot be read\n"
    writer = pypdf.PdfWriter(clone_from=FRAMEWORK)
    writer.encrypt("secret")
    locked = tmp_path / "locked.pdf"
    writer.write(locked)
    result = cli(*CREATE, "--invite", "invitation", "--attach", str(locked))
    assert result.stderr == (
        f"Error: --attach: {locked}: the PDF is locked with a password; attach an unlocked copy\n"
    )
    assert attachments_stored(sample) == 0


def test_wave_show_lists_attachments_and_edit_replaces_or_detaches_them(cli, sample, files, monkeypatch):
    monkeypatch.chdir(ROOT)
    created = cli(*CREATE, "--invite", "invitation", "--attach", "data/risk-assessment-framework.pdf")
    assert created.exit_code == 0, created.output
    assert "  attached: risk-assessment-framework.pdf (PDF, 23 KB)\n" in created.stdout
    edited = cli("wave", "edit", "Employers", "--attach", str(files["notes"]))
    assert "  attached: risk-assessment-framework.pdf (PDF, 23 KB)\n" in edited.stdout
    assert f"  attached: {NOTES_NAME} (DOCX, 36 KB)\n" in edited.stdout
    shown = json.loads(cli("wave", "show", "Employers", "--json").stdout)
    assert [(a["name"], a["type"], a["size"]) for a in shown["attachments"]] == [
        ("risk-assessment-framework.pdf", "PDF", FRAMEWORK.stat().st_size),
        (NOTES_NAME, "DOCX", files["notes"].stat().st_size),
    ]
    # A file of the same name replaces the one attached (a new version); --detach removes one.
    cli("wave", "edit", "Employers", "--attach", str(files["framework"]), "--detach", NOTES_NAME)
    shown = json.loads(cli("wave", "show", "Employers", "--json").stdout)
    assert [a["name"] for a in shown["attachments"]] == ["risk-assessment-framework.pdf"]
    missing = cli("wave", "edit", "Employers", "--detach", "minutes.pdf")
    assert missing.stderr == (
        "Error: --detach: the wave has no attachment 'minutes.pdf' (it has: risk-assessment-framework.pdf)\n"
    )


@pytest.mark.parametrize(
    "given, media_type, safe",
    [
        ("../../etc/framework.pdf", PDF, "framework.pdf"),
        ("C:\\Users\\rep\\Risk: v2?.pdf", PDF, "Risk_ v2_.pdf"),
        ("notes\r\nBcc: x@example.org.docx", DOCX, "notes Bcc_ x@example.org.docx"),
        ("framework.docx", PDF, "framework.docx.pdf"),  # named by its content
        ("...", PDF, "attachment.pdf"),
    ],
)
def test_attachment_names_are_made_safe_for_headers_and_file_systems(given, media_type, safe):
    assert safe_filename(given, media_type) == safe


# ---- on paper ------------------------------------------------------------------------------


def test_a_print_run_has_each_letter_then_the_attachments_pages(cli, sample, files, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = dataclasses.replace(EMPLOYER_WAVE, attach=[str(FRAMEWORK), str(files["notes"])])
    create_wave(sample, "Employers", spec, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    for member in ("M100018", "M100020"):  # their council has no email: they post the letter
        assert cli("letters", "decide", "Employers", member, "self").exit_code == 0
    result = cli("wave", "pdf", "Employers", "--out", str(tmp_path / "run"), "--combined")
    assert result.exit_code == 0, result.output
    # Each letter: its own page, the framework's two, and the notes printed as one A4 page.
    assert result.stdout.startswith(
        f"Printed 2 letters (8 pages) to {tmp_path / 'run' / 'employers-letters.pdf'};"
    )
    pages = [p.extract_text() for p in pypdf.PdfReader(tmp_path / "run" / "employers-letters.pdf").pages]
    for first, writer in ((0, "Rory Fletcher"), (4, "Tom Barker")):
        assert writer in pages[first] and "a copy is attached" in " ".join(pages[first].split())
        assert pages[first + 1].startswith("Inspection risk assessment: a framework for schools")
        assert "6. Review" in pages[first + 2]
        notes = " ".join(pages[first + 3].split())
        assert "Notes for the inspection risk assessment" in notes
        assert "Ask the staff first; record what they say." in notes and NOTES_NAME in notes
    # One file per letter, the same pages in each.
    each = cli("wave", "pdf", "Employers", "--out", str(tmp_path / "each"), "--json")
    report = json.loads(each.stdout)
    assert (report["letters"], report["pages"]) == (2, 8)
    for path in report["files"]:
        assert len(pypdf.PdfReader(path).pages) == 4


def test_a_print_run_puts_the_attachments_after_first_letters_not_after_follow_ups(sample, tmp_path):
    create_wave(sample, "Employers", dataclasses.replace(EMPLOYER_WAVE, attach=[str(FRAMEWORK)]), SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    original = letter_for_member(sample, "Employers", "M100001").letter
    with sample.begin() as conn:
        conn.execute(letter_table.update().where(letter_table.c.id == original["id"]).values(state="replied"))
        wave = load_followup_wave(conn, original["wave_id"], SETTINGS)
        draft_letter(conn, wave, {**original, "state": "replied"}, "follow_up", SETTINGS, utcnow())
    follow_up = letter_for_member(sample, "Employers", "M100001", kind="follow_up").letter
    refs = [original["reference"], follow_up["reference"]]
    run = write_wave_pdfs(
        sample, "Employers", tmp_path / "run", combined=True, states=["all"], references=refs
    )
    pages = [p.extract_text() for p in pypdf.PdfReader(run.files[0]).pages]
    # The first letter, the framework's two pages, then the follow-up alone.
    assert run.pages == len(pages) == 4
    assert original["reference"] in pages[0] and follow_up["reference"] in pages[3]
    assert pages[1].startswith("Inspection risk assessment: a framework for schools")
    each = write_wave_pdfs(sample, "Employers", tmp_path / "each", states=["all"], references=refs)
    assert [len(pypdf.PdfReader(path).pages) for path in each.files] == [3, 1]
    assert each.files == [tmp_path / "each" / f"{ref}.pdf" for ref in refs]


def test_the_preview_pdf_and_the_members_download_end_with_the_attachments(cli, sample, tmp_path):
    create_wave(sample, "Employers", dataclasses.replace(EMPLOYER_WAVE, attach=[str(FRAMEWORK)]), SETTINGS)
    text = cli("wave", "preview", "Employers").stdout
    assert "\n[attached: risk-assessment-framework.pdf (PDF, 23 KB)]\n" in text
    preview = tmp_path / "preview.pdf"
    assert cli("wave", "preview", "Employers", "--out", str(preview)).exit_code == 0
    pages = [p.extract_text() for p in pypdf.PdfReader(preview).pages]
    assert len(pages) == 3 and pages[1].startswith("Inspection risk assessment")
    launch_wave(sample, "Employers", SETTINGS)
    with Site(sample) as site:
        response = requests.get(site.link("M100001") + "/letter.pdf", timeout=60)
    assert response.headers["Content-Type"] == "application/pdf"
    pages = [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(response.content)).pages]
    assert len(pages) == 3 and "Aisha Khan" in pages[0]
    assert pages[1].startswith("Inspection risk assessment") and "6. Review" in pages[2]
