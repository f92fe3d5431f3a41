"""The bundled Ofsted campaign letters say what the campaign asks (issue 13, items 1-3), and the
acknowledgement of an employer's reply is drafted only after a reply that answers: its wording
follows the reply's outcome, and a holding reply restarts the reply clock instead."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from email.utils import format_datetime

import pytest
from conftest import ROOT
from sqlalchemy import select
from test_replies import fill, sent, stored  # noqa: F401  (the sent-wave fixture)
from test_waves import EMPLOYER_WAVE, MP_WAVE, SETTINGS, sample  # noqa: F401

from engine.followup.chase import chase, working_days_after
from engine.inbox.ingest import Ingester
from engine.letters.confirm import letter_for_member
from engine.letters.launch import launch_wave
from engine.letters.targeting import template_nations
from engine.letters.template_check import check_template_file
from engine.letters.waves import WaveSpec, create_wave
from engine.store.models import letter_table, member_table, school_table

TEMPLATES = ROOT / "templates"
BUNDLED = sorted((TEMPLATES / "letters").glob("*.txt")) + sorted((TEMPLATES / "email").glob("*.*"))


def one_line(text: str) -> str:
    """The text with its line breaks and runs of spaces made single spaces, to read it as prose."""
    return " ".join(text.split())


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_bundled_template_passes_template_check(cli, path):
    result = cli("template", "check", str(path))
    assert result.exit_code == 0, result.output
    assert check_template_file(path).problems == []


def test_every_bundled_letter_names_ofsted_and_its_revised_framework():
    for path in sorted((TEMPLATES / "letters").glob("*.txt")):
        text = one_line(path.read_text())
        assert "Ofsted" in text, path.name
        assert "revised" in text and "framework" in text, path.name
        # The source says the framework "continues to pose a risk": no stronger claim of harm.
        assert "serious and lasting harm" not in text, path.name


def test_the_employer_letter_merged_for_a_member_asks_what_the_campaign_asks(sample):  # noqa: F811
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    found = letter_for_member(sample, "Employers", "M100001")
    subject, text = found.letter["subject"], one_line(found.text)
    assert "Ofsted's revised framework" in subject
    assert text.startswith(f"Dear {found.letter['target_salutation']},")
    assert "Ofsted's revised inspection framework" in text
    # What will you do, in light of the independent assessment, for school leaders and their teams?
    assert "independent well-being impact assessment of the revised framework" in text
    assert "what you will do, in light of that assessment, to protect and support school leaders" in text
    assert "remains a risk to the safety and well-being of school staff" in text
    # The legal duty, foreseeable stressors such as inspection.
    assert "The law requires you, as our employer, to identify the risks to the health, safety" in text
    assert "stressors you can foresee, and an Ofsted inspection is plainly one of them" in text
    # A school-specific risk assessment, the union's framework as a starting point.
    school = found.member["school"]
    assert school and f"a risk assessment of inspection specific to {school}" in text
    assert "the union's inspection risk-assessment framework as a starting point" in text
    # The demo's wave attaches the framework (Makefile, --attach), and the letter says so.
    assert "(a copy is attached: it guides such an assessment but cannot stand in for one)" in text
    assert "a union health and safety representative may be present when the school is inspected" in text
    # N = the wave's reply_days.
    assert f"within {EMPLOYER_WAVE.reply_days} working days" in text
    assert found.letter["reference"] in text
    assert "serious and lasting harm" not in text


def test_the_mp_letter_merged_for_a_member_asks_for_a_pause(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    found = letter_for_member(sample, "MPs", "M100003")
    text = one_line(found.text)
    assert found.letter["subject"] == "Ofsted's revised framework and school staff in Sevenoaks"
    assert "Ofsted's revised school inspection framework" in text
    assert "press the Secretary of State for Education to pause the rollout of the revised framework" in text
    assert (
        "act on the independent assessment: slow the rollout, reconsider the top grade, and have "
        "complaints about inspections handled independently of Ofsted" in text
    )
    assert "independent review" not in text
    # The prompt for the member's own words is kept, whole, on its own line.
    assert re.search(r"\n\[Why this matters in your school: [^\n]*\]\n", found.text)


# ---- England only (Ofsted inspects schools in England) -----------------------------------

OFSTED_LETTERS = [p for p in sorted((TEMPLATES / "letters").glob("*.txt")) if "Ofsted" in p.read_text()]
# Each bundled letter that starts a wave, with the wave it starts; follow-ups and chasers go to
# the target of the letter they follow.
FIRST_LETTERS = {
    "mp-inspection": MP_WAVE,
    "employer-wellbeing": EMPLOYER_WAVE,
    "jcnc-agenda": WaveSpec(target="employer", letter="jcnc-agenda", invite="invitation"),
    "secretary-of-state": WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to="Secretary of State for Education <sos@education.example>",
        to_salutation="Secretary of State",
    ),
    "inspector-step-down": WaveSpec(
        target="fixed",
        letter="inspector-step-down",
        invite="invitation",
        to="Ofsted <enquiries@ofsted.example.org>",
    ),
}


def test_every_bundled_ofsted_letter_reaches_england_only_by_default():
    assert [p.stem for p in OFSTED_LETTERS] == [
        "employer-chaser",
        "employer-follow-up",
        "employer-wellbeing",
        "inspector-step-down",
        "jcnc-agenda",
        "jcnc-chaser",
        "mp-inspection",
        "secretary-of-state",
    ]
    for path in OFSTED_LETTERS:
        assert template_nations(path.read_text(), path.name) == ["england"], path.name


def _in_england(code: str | None, la_code: str | None = None) -> bool:
    """A GSS code in England (E…), or failing one a GIAS LA code outside Wales's 660-681."""
    if code:
        return code.startswith("E")
    return la_code is not None and not 660 <= int(la_code) <= 681


@pytest.mark.parametrize("letter", sorted(FIRST_LETTERS))
def test_no_letter_of_a_bundled_ofsted_template_goes_to_a_target_outside_england(sample, letter):  # noqa: F811
    create_wave(sample, letter, FIRST_LETTERS[letter], SETTINGS)
    result = launch_wave(sample, letter, SETTINGS)
    assert result.created > 0
    assert result.skipped["outside_nations"] > 0  # the demo data has members in the other nations
    lt, m, s = letter_table.c, member_table.c, school_table.c
    with sample.connect() as conn:
        rows = conn.execute(
            select(lt.target_kind, lt.target_key, m.constituency_code, s.constituency_code, s.la_code)
            .join(member_table, m.id == lt.member_id)
            .outerjoin(school_table, s.urn == m.school_urn)
        ).all()
    assert len(rows) == result.created
    for kind, key, constituency, school_constituency, la_code in rows:
        if kind == "employer":
            # The employer is written to about a school: the school is in England.
            assert _in_england(school_constituency, la_code), key
        else:
            # An MP's seat, or the member's own constituency for a fixed recipient.
            assert _in_england(constituency), key


# ---- the acknowledgement of an employer's reply (item 2) ---------------------------------


def follow_up_of(engine, letter_id: int) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(letter_table).where(
                letter_table.c.parent_id == letter_id, letter_table.c.kind == "follow_up"
            )
        ).first()
    return dict(row._mapping) if row else None


def state_of(engine, letter_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(letter_table.c.state).where(letter_table.c.id == letter_id)).scalar_one()


SUPPORTIVE = "Thank you for your support, and one further step on Ofsted's revised framework"
NOT_ANSWERED = "Your reply on Ofsted's revised framework, and a further request"


@pytest.mark.parametrize(
    ("sample_mail", "outcome", "subject", "says"),
    [
        ("fwd-new-outlook-html", "supportive", SUPPORTIVE, "for the support you have offered"),
        ("fwd-outlook-desktop", "refusal", NOT_ANSWERED, "I would ask you to think again"),
        ("fwd-apple-mail", "non_committal", NOT_ANSWERED, "I would ask you to think again"),
    ],
)
def test_a_reply_that_answers_drafts_the_acknowledgement_worded_for_its_outcome(
    sent,  # noqa: F811
    sample_mail,
    outcome,
    subject,
    says,
):
    engine, letters = sent
    letter = letters[sample_mail]
    inbound_id = Ingester(engine, SETTINGS).record(fill(sample_mail, letter), "eml")
    assert stored(engine, inbound_id)["suggested_outcome"] == outcome
    assert state_of(engine, letter["id"]) == "replied"
    follow_up = follow_up_of(engine, letter["id"])
    assert follow_up is not None and follow_up["subject"] == subject
    text = one_line(follow_up["body_text"])
    assert "Thank you for" in text and says in text
    assert "write to the Secretary of State for Education" in text
    assert "Ofsted's revised inspection framework" in text
    if outcome != "supportive":
        # A refusal or a non-answer is reminded of the duty and the two asks it has not met.
        assert "the legal duty to manage that risk rests with you" in text
        assert "a union health and safety representative to be able to attend inspections" in text
        assert "for the support you have offered" not in text


@pytest.mark.parametrize("sample_mail", ["fwd-gmail-en", "fwd-outlook-web", "auto-reply"])
def test_a_holding_reply_an_acknowledgement_or_an_auto_reply_drafts_nothing(sent, sample_mail):  # noqa: F811
    engine, letters = sent
    letter = letters[sample_mail]
    Ingester(engine, SETTINGS).record(fill(sample_mail, letter), "eml")
    assert follow_up_of(engine, letter["id"]) is None
    assert state_of(engine, letter["id"]) == "sent"  # still awaiting an answer


def test_staff_coding_a_holding_reply_as_an_answer_draft_the_acknowledgement_then(sent, cli, tmp_path):  # noqa: F811
    engine, letters = sent
    letter = letters["fwd-gmail-en"]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "reply.eml").write_bytes(fill("fwd-gmail-en", letter))
    ingested = cli("replies", "ingest", "--eml", str(tmp_path / "in"))
    assert ingested.exit_code == 0, ingested.output
    assert "0 letters replied, 0 bounced, 0 addresses suppressed, 0 follow-ups drafted." in ingested.output
    [reply] = json.loads(cli("replies", "list", "--json").output)
    assert follow_up_of(engine, letter["id"]) is None
    # Coding it holding again changes nothing; coding it an answer drafts the follow-up.
    held = cli("replies", "outcome", str(reply["id"]), "holding")
    assert held.exit_code == 0 and "It answers its letter" not in held.output
    assert follow_up_of(engine, letter["id"]) is None
    coded = cli("replies", "outcome", str(reply["id"]), "refusal")
    assert coded.exit_code == 0, coded.output
    assert f"Message {reply['id']}: refusal (the engine suggested holding)." in coded.output
    assert "the letter is now replied; its follow-up letter is drafted" in coded.output
    assert state_of(engine, letter["id"]) == "replied"
    follow_up = follow_up_of(engine, letter["id"])
    assert follow_up is not None and follow_up["subject"] == NOT_ANSWERED
    # Coded again, nothing more is drafted.
    again = cli("replies", "outcome", str(reply["id"]), "supportive")
    assert again.exit_code == 0 and "It answers its letter" not in again.output
    with engine.connect() as conn:
        drafted = conn.execute(
            select(letter_table.c.id).where(
                letter_table.c.parent_id == letter["id"], letter_table.c.kind == "follow_up"
            )
        ).all()
    assert len(drafted) == 1


def holding_reply(letter: dict, reference: str, written, tag: str) -> bytes:
    """The employer's "we will reply in full next week", written on `written`, to `reference`."""
    data = fill(
        "direct-reply-plus-address", {**letter, "placeholders": {**letter["placeholders"], "REF": reference}}
    )
    data = data.replace(b"Mon, 16 Nov 2026 16:00:00 +0000", format_datetime(written).encode())
    return data.replace(b"plus-address-0022", f"plus-address-{tag}".encode())


def test_a_holding_reply_restarts_the_reply_clock_for_chasing(sent):  # noqa: F811
    engine, letters = sent
    letter = letters["spare1"]
    went = letter["sent_at"]
    reply_days = 10  # the sent wave's window
    # A week after the letter went, the employer promises a full reply.
    written = went + timedelta(days=7)
    Ingester(engine, SETTINGS).record(holding_reply(letter, letter["reference"], written, "a"), "eml")
    assert state_of(engine, letter["id"]) == "sent"
    first_due = working_days_after(went.date(), reply_days, "England")
    on_first_due = went.replace(year=first_due.year, month=first_due.month, day=first_due.day) + timedelta(
        hours=1
    )
    chase(engine, SETTINGS, now=on_first_due)
    # Every other letter is overdue; this one's window started again from the holding reply.
    assert state_of(engine, letters["spare2"]["id"]) == "overdue"
    assert state_of(engine, letter["id"]) == "sent"
    second_due = working_days_after(written.date(), reply_days, "England")
    on_second_due = went.replace(year=second_due.year, month=second_due.month, day=second_due.day)
    assert chase(engine, SETTINGS, now=on_second_due - timedelta(days=1)).overdue == 0
    later = chase(engine, SETTINGS, now=on_second_due + timedelta(hours=1))
    assert (later.overdue, later.chasers) == (1, 1)
    assert state_of(engine, letter["id"]) == "overdue"
    # Another holding reply, to the chaser this time: the letter awaits an answer again.
    with engine.connect() as conn:
        chaser = conn.execute(
            select(letter_table).where(
                letter_table.c.parent_id == letter["id"], letter_table.c.kind == "chaser"
            )
        ).one()
    written_again = on_second_due + timedelta(days=2)
    Ingester(engine, SETTINGS).record(holding_reply(letter, chaser.reference, written_again, "b"), "eml")
    assert state_of(engine, letter["id"]) == "sent"
    assert follow_up_of(engine, letter["id"]) is None
    third_due = working_days_after(written_again.date(), reply_days, "England")
    on_third_due = went.replace(year=third_due.year, month=third_due.month, day=third_due.day)
    assert chase(engine, SETTINGS, now=on_third_due - timedelta(days=1)).overdue == 0
    # Overdue once more, with the one chaser it already has.
    last = chase(engine, SETTINGS, now=on_third_due + timedelta(hours=1))
    assert (last.overdue, last.chasers) == (1, 0)
