"""Printed letters: which letters a print run holds, and how a letter looks on A4 paper."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pypdf
import pytest
from conftest import ROOT
from sqlalchemy import select
from test_browser import browser, site  # noqa: F401  (fixtures for the download test)
from test_campaign_letters import FIRST_LETTERS
from test_waves import EMPLOYER_WAVE, MP_WAVE, SETTINGS, load_sample

from engine.followup.drafts import draft_letter
from engine.followup.drafts import load_wave as load_followup_wave
from engine.letters.documents import iter_letters, letter_document, pdf_bytes, write_wave_pdfs
from engine.letters.launch import launch_wave
from engine.letters.render import WaveRenderer
from engine.letters.waves import create_wave
from engine.store.db import init_db, open_engine
from engine.store.models import letter_table, utcnow, wave_table


def pages_of(path: Path | bytes) -> list[str]:
    return [
        page.extract_text()
        for page in pypdf.PdfReader(io.BytesIO(path) if isinstance(path, bytes) else path).pages
    ]


def print_letters(engine, wave: str, references: list[str] | None = None) -> tuple[list[str], int]:
    """A wave's letters (or some) printed as one run, as `wave pdf --combined` prints them:
    the text of each page, and how many letters."""
    with engine.connect() as conn:
        frozen = conn.execute(select(wave_table.c.frozen).where(wave_table.c.name == wave)).scalar_one()
        stmt = (
            select(letter_table).join(wave_table).where(wave_table.c.name == wave).order_by(letter_table.c.id)
        )
        if references:
            stmt = stmt.where(letter_table.c.reference.in_(references))
        letters = [dict(row._mapping) for row in conn.execute(stmt)]
    renderer = WaveRenderer(frozen)
    return pages_of(pdf_bytes([letter_document(letter, renderer) for letter in letters])), len(letters)


def reference_of(engine, wave: str, membership_no: str) -> str:
    return next(
        r["reference"] for r in iter_letters(engine, wave=wave) if r["membership_no"] == membership_no
    )


# ---- what a print run holds (issue 12, item 4) -----------------------------------------


@pytest.fixture
def decided(cli, engine, tmp_path, monkeypatch):
    """The sample's employer wave after the invitations went: two members (their council has
    no email address) post their letters themselves, one had it sent by email, one opted out."""
    monkeypatch.chdir(ROOT)
    load_sample(engine, tmp_path)
    create_wave(engine, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(engine, "Employers", SETTINGS)
    for member, choice in (
        ("M100018", "self"),
        ("M100020", "self"),
        ("M100001", "send"),
        ("M100005", "opt-out"),
    ):
        assert cli("letters", "decide", "Employers", member, choice).exit_code == 0
    outbox = {"CAMPAIGN_OUTBOX_DIR": str(tmp_path / "outbox"), "SMTP_URL": None}
    assert cli("send", "--once", "--rate", "1000", env=outbox).exit_code == 0
    return engine


def test_a_print_run_holds_only_the_letters_due_on_paper_and_says_what_it_left_out(cli, decided, tmp_path):
    out = tmp_path / "print-run"
    result = cli("wave", "pdf", "Employers", "--out", str(out), "--combined")
    assert result.exit_code == 0, result.output
    run = out / "employers-letters.pdf"
    assert result.stdout.splitlines()[0] == (
        f"Printed 2 letters (2 pages) to {run}; "
        "left out 31: 29 not yet confirmed, 1 opted out, 1 sent by email."
    )
    assert "choose others with --state" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["employers-letters.pdf"]
    text = "\n".join(pages_of(run))
    assert "Rory Fletcher" in text and "Tom Barker" in text
    assert "Aisha Khan" not in text  # her letter went by email
    # One file per letter without --combined, by the same choice.
    single = cli("wave", "pdf", "Employers", "--out", str(tmp_path / "each"))
    assert single.stdout.startswith(f"Printed 2 letters (2 pages) to {tmp_path / 'each'}; left out 31:")
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == sorted(
        f"{reference_of(decided, 'Employers', m)}.pdf" for m in ("M100018", "M100020")
    )


def test_state_chooses_other_letters_and_json_says_what_was_left_out(cli, decided, tmp_path):
    out = tmp_path / "others"
    result = cli(
        "wave", "pdf", "Employers", "--out", str(out), "--state", "sent", "--state", "opted_out", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["letters"], report["pages"], report["selected"]) == (2, 2, ["sent", "opted_out"])
    assert report["left_out"] == 31
    assert report["left_out_by_reason"] == {"not_confirmed": 29, "due_on_paper": 2}
    assert sorted(Path(f).name for f in report["files"]) == sorted(
        f"{reference_of(decided, 'Employers', m)}.pdf" for m in ("M100001", "M100005")
    )
    limited = json.loads(
        cli("wave", "pdf", "Employers", "--out", str(out), "--state", "all", "--limit", "5", "--json").stdout
    )
    assert (limited["letters"], limited["left_out_by_reason"]) == (5, {"over_limit": 28})


def test_a_reference_not_in_the_wave_is_one_line_and_prints_nothing(cli, decided, tmp_path):
    result = cli("wave", "pdf", "Employers", "--out", str(tmp_path / "x"), "--ref", "NOPE0-00000")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "Error: --ref: wave 'Employers' has no letter NOPE0-00000\n"
    assert list((tmp_path / "x").iterdir()) == []


# ---- how a letter looks on paper (issue 12, item 5) -------------------------------------


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """The sample's MP and employer waves, launched, on a SQLite file: this is about paper."""
    tmp = tmp_path_factory.mktemp("print")
    engine = open_engine(f"sqlite:///{tmp}/print.db")
    init_db(engine)
    load_sample(engine, tmp)
    create_wave(engine, "MPs", MP_WAVE, SETTINGS)
    launch_wave(engine, "MPs", SETTINGS)
    create_wave(engine, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(engine, "Employers", SETTINGS)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("wave", ["MPs", "Employers"])
def test_every_standard_letter_fits_one_page_with_its_reference_once(printed, wave):
    pages, letters = print_letters(printed, wave)
    assert len(pages) == letters  # each letter starts a page: so each is one page
    first = pages[0]
    reference = next(iter_letters(printed, wave=wave))["reference"]
    assert first.count(reference) == 1
    assert first.count("•") == 3  # the three requests print as a real list
    assert not re.search(r"^- ", first, re.M)
    assert "continued" not in first
    closing, _, after = first.partition("Yours sincerely,")
    assert closing and "Aisha Khan" in after


def test_letters_printed_one_per_file_each_hold_their_own_letter_and_title(printed, tmp_path):
    letters = list(iter_letters(printed, wave="MPs"))
    assert len({letter["subject"] for letter in letters}) > 1  # the MP letter names the seat
    # Laid out several at a time, by this process and a worker process.
    run = write_wave_pdfs(printed, "MPs", tmp_path, states=["all"], parallel=True)
    assert run.files == [tmp_path / f"{letter['reference']}.pdf" for letter in letters]
    assert (run.letters, run.pages) == (len(letters), len(letters))
    for letter, path in zip(letters, run.files, strict=True):
        reader = pypdf.PdfReader(path)
        [text] = [page.extract_text() for page in reader.pages]
        assert letter["reference"] in text and letter["member"] in text
        assert reader.metadata.title == letter["subject"]
    # Each file carries only the glyphs its letter uses, not whole fonts.
    assert max(path.stat().st_size for path in run.files) < 40_000


@pytest.fixture(scope="module")
def every_template(tmp_path_factory):
    """A wave of each bundled first letter on the sample, with a follow-up (to a supportive
    reply and to a refusal) and a chaser drafted for the first letters that have them."""
    tmp = tmp_path_factory.mktemp("templates")
    engine = open_engine(f"sqlite:///{tmp}/templates.db")
    init_db(engine)
    load_sample(engine, tmp)
    specs = {
        **FIRST_LETTERS,
        "jcnc-agenda": dataclasses.replace(
            FIRST_LETTERS["jcnc-agenda"], chaser="jcnc-chaser", meeting_date="2031-03-20"
        ),
    }
    for name, spec in specs.items():
        create_wave(engine, name, spec, SETTINGS)
        launch_wave(engine, name, SETTINGS)
    with engine.begin() as conn:
        for name in ("employer-wellbeing", "jcnc-agenda"):
            wave_id = conn.execute(select(wave_table.c.id).where(wave_table.c.name == name)).scalar_one()
            wave = load_followup_wave(conn, wave_id, SETTINGS)
            firsts = conn.execute(
                select(letter_table).where(letter_table.c.wave_id == wave_id).order_by(letter_table.c.id)
            ).all()
            for i, first in enumerate(dict(row._mapping) for row in firsts[:2]):
                draft_letter(conn, wave, first, "chaser", SETTINGS, utcnow())
                if name == "employer-wellbeing":
                    outcome = ("supportive", "refusal")[i]
                    reply = {"author": "Jo Head", "date": "3 March 2031", "excerpt": "", "text": ""}
                    draft_letter(
                        conn, wave, first, "follow_up", SETTINGS, utcnow(), {**reply, "outcome": outcome}
                    )
    yield engine
    engine.dispose()


@pytest.mark.parametrize(
    "template, wave, kind",
    [
        *((name, name, "letter") for name in sorted(FIRST_LETTERS)),
        ("employer-follow-up", "employer-wellbeing", "follow_up"),
        ("employer-chaser", "employer-wellbeing", "chaser"),
        ("jcnc-chaser", "jcnc-agenda", "chaser"),
    ],
)
def test_every_bundled_letter_prints_on_one_page(every_template, tmp_path, template, wave, kind):
    references = [r["reference"] for r in iter_letters(every_template, wave=wave, kind=kind)][:3]
    assert len(references) >= 2
    run = write_wave_pdfs(
        every_template, wave, tmp_path, combined=True, states=["all"], references=references
    )
    assert (run.letters, run.pages) == (len(references), len(references)), template


# Long enough to run onto a second page at a point where, unless kept together, the
# closing would stand on one page and the name under it on the next.
OWN_WORDS = " ".join(f"Sentence {i} of what happened at my school." for i in range(15))


def long_letter(engine, membership_no: str) -> str:
    body = next(r for r in iter_letters(engine, wave="MPs") if r["membership_no"] == membership_no)
    from engine.letters.confirm import letter_for_member, sent_myself

    found = letter_for_member(engine, "MPs", membership_no)
    text = found.letter["body_text"].replace(
        "Thank you for reading this. I look forward to your reply.", OWN_WORDS
    )
    assert sent_myself(engine, found, text)
    return body["reference"]


def test_a_long_letter_goes_on_with_page_numbers_and_never_leaves_the_sign_off_alone(printed):
    references = [long_letter(printed, "M100001"), long_letter(printed, "M100002")]
    pages, letters = print_letters(printed, "MPs", references)
    assert (letters, len(pages)) == (2, 4)
    for first, second, reference in (
        (pages[0], pages[1], references[0]),
        (pages[2], pages[3], references[1]),
    ):
        assert "continued" not in first and "Page" not in first
        # The page number counts from each letter's own first page, in one print run too.
        assert re.search(r"continued\s*Page 2\b", second)
        assert (first + second).count(reference) == 1
        before, _, after = second.partition("Yours sincerely,")
        assert after.strip(), "the name is on the page of the closing"
        assert "of what happened at my school" in before, "the sign-off is not alone on its page"


def test_lines_starting_with_a_hyphen_become_a_list():
    from engine.letters.documents import body_html

    html = body_html("Dear Sir,\n\nI ask you to:\n- act;\n- reply.\n\nYours faithfully,\n\nAnn Lee\n")
    assert "<p>I ask you to:</p>\n<ul" in html and "<li>act;</li><li>reply.</li></ul>" in html
    assert '<div class="signoff"' in html and "<p>Ann Lee</p>" in html


def test_the_members_pdf_from_their_page_is_one_page(site, browser):  # noqa: F811
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(site.link("M100001"))
    with page.expect_download() as download:
        page.locator("a, button").filter(has_text=re.compile("PDF")).first.click()
    path = download.value.path()
    pages = pages_of(Path(path))
    context.close()
    assert len(pages) == 1
    assert "Dear Ms Alden," in pages[0] and "Yours sincerely," in pages[0]
