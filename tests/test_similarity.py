"""The warning about near-identical letters to one target: at launch and in `wave status`."""

from __future__ import annotations

import json

import pytest
from test_waves import SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.letters import similarity
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.similarity import likeness, sentences
from engine.letters.waves import WaveSpec, create_wave, wave_status
from engine.store.models import member_table

SEVENOAKS, TIVERTON = "E14001465", "E14001495"
AS_MERGED = [f"M1000{n:02d}" for n in range(1, 8)]  # to Harriet Alden MP, left as merged
PERSONAL = [f"M1000{n:02d}" for n in range(8, 15)]  # to Owen Prideaux MP, each in their own words
# What each member of PERSONAL adds: their own school, in their own words.
OWN_WORDS = [
    "Our head was signed off sick for a term after our last inspection. Two of my colleagues have since "
    "left teaching altogether. We are a small rural primary and we cannot recruit to replace them.",
    "I run the school office, and in inspection week I worked until midnight every night. My own children "
    "hardly saw me. The single-word grade we were given bore no relation to what the inspectors said.",
    "As a SENCo I watched our most vulnerable pupils pick up on the staff's fear during the visit. One boy "
    "refused to come in for a week afterwards. Nobody asked how the inspection affected them.",
    "I have taught for twenty-two years and have never seen morale this low. Three newly qualified "
    "teachers in my department have told me they will leave at the end of the year.",
    "Our deputy was hospitalised with chest pains two days before the call came. The inspection went "
    "ahead anyway. I would like to know who is accountable for the welfare of staff in that week.",
    "Teaching assistants like me are rarely mentioned in this debate. We carry the extra marking, cover "
    "and pastoral work that inspection preparation creates, on term-time-only pay.",
    "I am a business manager and our budget now carries a line for consultants who prepare us for "
    "inspection. That is money that should be spent on children, not on mock visits.",
]


@pytest.fixture
def mp_wave(sample):  # noqa: F811
    """Seven members write to Harriet Alden MP, seven to Owen Prideaux MP."""
    with sample.begin() as conn:
        for members, seat in ((AS_MERGED, SEVENOAKS), (PERSONAL, TIVERTON)):
            conn.execute(
                member_table.update()
                .where(member_table.c.membership_no.in_(members))
                .values(constituency_code=seat, mp_status="resolved")
            )
    spec = WaveSpec(
        target="mp",
        letter="mp-inspection",
        invite="invitation",
        where=[f"membership_no={','.join(AS_MERGED + PERSONAL)}"],
    )
    create_wave(sample, "MPs", spec, SETTINGS)
    return sample


def test_likeness_is_the_share_of_text_in_sentences_and_clauses_both_letters_have():
    # Pieces under 25 characters (salutation, signature, address lines) say nothing of the text.
    pieces, size = sentences("Dear Minister,\nThe framework puts staff at risk.\nYours sincerely")
    assert (pieces, size) == ({"The framework puts staff at risk."}, 33)
    ours = sentences("The framework puts staff at risk. Please press for a pause to the rollout")
    assert likeness(ours, ours) == 1.0
    # 32 characters in common, out of the longer letter's 32 + 39.
    theirs = sentences("The framework puts staff at risk. Our head was signed off sick for a term")
    assert likeness(ours, theirs) == pytest.approx(32 / 71)


def test_launch_warns_of_each_target_getting_many_near_identical_letters(mp_wave):
    result = launch_wave(mp_wave, "MPs", SETTINGS, similar_warn=5)
    assert [(w["target"], w["similar"], w["letters"], w["estimated"]) for w in result.similar] == [
        ("Harriet Alden MP", 7, 7, False),
        ("Owen Prideaux MP", 7, 7, False),
    ]
    # Letters merged from one template differ only by the member's name, role, school, address.
    assert all(0.9 < w["likeness"] < 1 for w in result.similar)
    assert launch_wave(mp_wave, "MPs", SETTINGS, similar_warn=7).similar == []  # "more than 7"


def test_members_who_personalise_their_letters_lift_the_warning_for_their_mp_only(mp_wave):
    launch_wave(mp_wave, "MPs", SETTINGS)
    for membership_no, words in zip(PERSONAL, OWN_WORDS, strict=True):
        found = letter_for_member(mp_wave, "MPs", membership_no)
        text = found.text.replace("[Why this matters", f"{words}\n\n[Why this matters")
        assert send_for_me(mp_wave, SETTINGS, found, text, "1 Orchard Way\nTiverton")
    status = wave_status(mp_wave, "MPs", similar_warn=5)
    assert [(w["target"], w["similar"]) for w in status["similar"]] == [("Harriet Alden MP", 7)]
    assert wave_status(mp_wave, "MPs")["similar"] == []  # not asked for


def test_a_large_target_is_judged_on_a_sample_and_the_count_says_about(mp_wave, monkeypatch):
    monkeypatch.setattr(similarity, "SAMPLE", 3)
    (alden, _) = launch_wave(mp_wave, "MPs", SETTINGS, similar_warn=5).similar
    assert (alden["similar"], alden["letters"], alden["estimated"]) == (7, 7, True)
    line = similarity.similar_warning_line(alden, 5)
    assert line.startswith("warning: Harriet Alden MP would get about 7 of its 7 letter(s) more than 90%")


def test_cli_launch_and_status_name_the_target_with_the_count(cli, mp_wave):
    launched = cli("wave", "launch", "MPs", "--similar-warn", "5")
    assert launched.exit_code == 0, launched.output
    lines = [line for line in launched.stdout.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2
    assert lines[0].startswith(
        "warning: Harriet Alden MP would get 7 of its 7 letter(s) more than 90% the same text ("
    )
    assert lines[0].endswith("more than 5 warns): ask members to put the letter in their own words")
    assert "aisha" not in launched.stdout.lower()  # targets are named, never members
    status = cli("wave", "status", "MPs", "--similar-warn", "5")
    assert "  warning: Owen Prideaux MP would get 7 of its 7 letter(s)" in status.stdout
    assert "at most 50 letter(s) a day to any one target" in status.stdout
    quiet = cli("wave", "status", "MPs", "--json")  # the default, 20: no target has that many
    data = json.loads(quiet.stdout)
    assert (data["similar"], data["similar_warn"], data["daily_cap"]) == ([], 20, 50)
