"""JCNC agenda letters: one letter per employer held by its lead official, chased before the meeting."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from conftest import ROOT, TEST_SECRET
from sqlalchemy import select

from engine.errors import CampaignError
from engine.followup.chase import chase, working_days_before
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.launch import launch_wave, left_out, preview_merge
from engine.letters.waves import WaveSpec, create_wave, edit_wave, get_wave, wave_status
from engine.lookup.employers import import_contacts
from engine.lookup.postcode_cache import load_cache_file
from engine.lookup.reps import import_mps
from engine.lookup.resolve import resolve_members
from engine.lookup.schools import import_schools
from engine.mail.outbox import build_invitation, parse_message
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.members.importer import import_members
from engine.settings import Settings
from engine.store.models import letter_table, outbox_table, utcnow

SETTINGS = Settings.from_env({"CAMPAIGN_SECRET": TEST_SECRET}, templates_dir=str(ROOT / "templates"))

SCHOOLS = """URN,LA (code),LA (name),EstablishmentName,TypeOfEstablishment (code),\
TypeOfEstablishment (name),EstablishmentStatus (name),Trusts (code),Trusts (name),Postcode,\
ParliamentaryConstituency (code)
100001,886,Kent,Sevenoaks Primary,1,Community school,Open,,,TN13 1AA,E14001465
100002,886,Kent,Otford Primary,1,Community school,Open,,,TN13 1AA,E14001465
100003,887,Medway,Chatham Grammar,1,Community school,Open,,,TN13 1AA,E14001465
"""
CONTACTS = """Employer key,Name,Kind,Email,Postal address,Salutation
la:886,Kent County Council,local_authority,hr@kent.example.org,Maidstone,Director of Education
la:887,Medway Council,local_authority,hr@medway.example.org,Chatham,Director of Children's Services
"""
# (membership no, first name, last name, school, official): three officials at Kent (listed out of
# membership-number order: the lead is J102), one who is not, and one official at Medway.
MEMBERS = [
    ("J105", "Cara", "Lee", "100002", "yes"),
    ("J102", "Ann", "Patel", "100001", "yes"),
    ("J104", "Ben", "Okafor", "100001", "yes"),
    ("J103", "Dev", "Shah", "100001", ""),
    ("J201", "Eve", "Morgan", "100003", "yes"),
]


@pytest.fixture
def officials(engine, tmp_path):
    """Five members at two employers, imported and resolved offline through the real importers."""
    rows = ["Membership No,First Name,Last Name,Email,Postcode,School URN,Branch,Official"]
    for no, first, last, urn, official in MEMBERS:
        rows.append(f"{no},{first},{last},{no.lower()}@members.example.org,TN13 1AA,{urn},Kent,{official}")
    (tmp_path / "members.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "schools.csv").write_text(SCHOOLS)
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    (tmp_path / "mps.csv").write_text(
        "Constituency code,Constituency name,MP name,Party,Email,Address as\n"
        "E14001465,Sevenoaks,Laura Trott,Conservative,laura.trott.mp@parliament.example.org,Ms Trott\n"
    )
    lookup = {
        "postcode": "TN13 1AA",
        "country": "England",
        "parliamentary_constituency_2024": "Sevenoaks",
        "codes": {"parliamentary_constituency_2024": "E14001465"},
    }
    (tmp_path / "postcodes.json").write_text(
        json.dumps({"status": 200, "result": [{"query": "TN13 1AA", "result": lookup}]})
    )
    import_members(engine, tmp_path / "members.csv")
    import_schools(engine, tmp_path / "schools.csv")
    import_contacts(engine, tmp_path / "contacts.csv")
    import_mps(engine, tmp_path / "mps.csv")
    load_cache_file(engine, tmp_path / "postcodes.json")
    resolve_members(engine, None)
    return engine


def jcnc_spec(meeting: date, **spec) -> WaveSpec:
    return WaveSpec(
        **{
            "target": "employer",
            "letter": "jcnc-agenda",
            "invite": "invitation",
            "chaser": "jcnc-chaser",
            "where": ["official=yes"],
            "one_per_target": True,
            "meeting_date": meeting.isoformat(),
            **spec,
        }
    )


def letters(engine, kind: str = "letter") -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(letter_table).where(letter_table.c.kind == kind).order_by(letter_table.c.id)
            )
        ]


def test_one_letter_per_employer_held_by_the_lead_naming_every_official(officials):
    meeting = date.today() + timedelta(days=40)
    create_wave(officials, "JCNC", jcnc_spec(meeting), SETTINGS)
    result = launch_wave(officials, "JCNC", SETTINGS, list_skipped=True)
    assert (result.created, result.sharing, result.already) == (2, 2, 0)
    assert result.skipped == {"not_selected": 1}  # J103 is not an official
    assert {(s["membership_no"], s["lead"], s["named"]) for s in result.sharing_members} == {
        ("J104", "J102", True),
        ("J105", "J102", True),
    }
    kent, medway = sorted(letters(officials), key=lambda letter: letter["target_key"])
    assert (kent["target_name"], medway["target_name"]) == ("Kent County Council", "Medway Council")
    # The lead (lowest membership number) holds Kent's letter; it names all three officials.
    assert kent["merge_snapshot"]["member"]["membership_no"] == "J102"
    assert "this letter comes from all of us: Ann Patel, Ben Okafor and Cara Lee." in kent["body_text"]
    assert "Ann Patel\nwith Ben Okafor and Cara Lee\nUnion officials on the JCNC" in kent["body_text"]
    long_meeting = f"{meeting.day} {meeting:%B %Y}"
    assert f"the JCNC meeting on {long_meeting}" in kent["body_text"]
    assert kent["subject"].startswith(f"Item for the JCNC agenda on {long_meeting}:")
    # Medway's one official writes alone.
    assert "from all of us: Eve Morgan." in medway["body_text"]
    assert "\nwith " not in medway["body_text"]
    # The invitation goes to the lead alone, and names those who share the letter.
    with officials.connect() as conn:
        invitations = conn.execute(
            select(outbox_table.c.to_addr).where(outbox_table.c.kind == "invitation")
        ).scalars()
        assert sorted(invitations) == [
            "Ann Patel <j102@members.example.org>",
            "Eve Morgan <j201@members.example.org>",
        ]
    wave, letter, invitation, merger = preview_merge(officials, "JCNC", SETTINGS, "J102")
    text = parse_message(build_invitation(invitation, letter, wave, merger.renderer, SETTINGS))
    body = " ".join(text.get_body(("plain",)).get_content().split())
    assert "it also names Ben Okafor and Cara Lee" in body


def test_relaunch_adds_no_second_letter_for_an_employer(officials, tmp_path):
    create_wave(officials, "JCNC", jcnc_spec(date.today() + timedelta(days=40)), SETTINGS)
    launch_wave(officials, "JCNC", SETTINGS)
    again = launch_wave(officials, "JCNC", SETTINGS, list_skipped=True)
    assert (again.created, again.already, again.sharing) == (0, 2, 2)
    # An official imported after the launch, with a lower number, shares Kent's letter; it does
    # not name them, and the count says so.
    (tmp_path / "late.csv").write_text(
        "Membership No,First Name,Last Name,Email,Postcode,School URN,Branch,Official\n"
        "J101,Fay,Ng,j101@members.example.org,TN13 1AA,100002,Kent,yes\n"
    )
    import_members(officials, tmp_path / "late.csv")
    resolve_members(officials, None)
    late = launch_wave(officials, "JCNC", SETTINGS, list_skipped=True)
    assert (late.created, late.sharing) == (0, 3)
    assert {s["membership_no"]: s["named"] for s in late.sharing_members} == {
        "J101": False,
        "J104": True,
        "J105": True,
    }
    assert len(letters(officials)) == 2
    status = wave_status(officials, "JCNC")
    assert status["letters"] == 2 and status["one_per_target"] is True
    assert left_out(officials, "JCNC") == {"shares_letter": 3, "not_selected": 1}


def test_wave_status_and_show_say_how_many_share_and_when_the_meeting_is(officials, cli):
    meeting = date.today() + timedelta(days=40)
    create_wave(officials, "JCNC", jcnc_spec(meeting, chase_before=3), SETTINGS)
    long_meeting = f"{meeting.day} {meeting:%B %Y}"
    shown = cli("wave", "show", "JCNC")
    assert shown.exit_code == 0, shown.output
    assert (
        f"meeting on {long_meeting}: an unanswered letter is chased 3 working days before it" in shown.output
    )
    launched = cli("wave", "launch", "JCNC")
    assert "2 letter(s) created" in launched.output
    assert "sharing 2: named as co-signatories" in launched.output
    status = cli("wave", "status", "JCNC")
    assert "JCNC' (launched, to employer): 2 letter(s)" in status.output
    assert "sharing 2: named as co-signatories" in status.output
    assert f"meeting on {long_meeting}" in status.output
    as_json = json.loads(cli("wave", "status", "JCNC", "--json").output)
    assert (as_json["sharing"], as_json["meeting_date"], as_json["chase_before"]) == (
        2,
        meeting.isoformat(),
        3,
    )


def test_a_meeting_date_in_the_past_is_refused(officials, cli):
    yesterday = date.today() - timedelta(days=1)
    with pytest.raises(CampaignError, match=r"--meeting-date: .* is in the past"):
        create_wave(officials, "JCNC", jcnc_spec(yesterday), SETTINGS)
    result = cli(
        "wave", "create", "JCNC", "--target", "employer", "--letter", "jcnc-agenda", "--invite",
        "invitation", "--one-per-target", "--meeting-date", yesterday.isoformat(),
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: --meeting-date: {yesterday.isoformat()} is in the past: give the date of the coming meeting"
    )
    bad = cli(
        "wave", "create", "JCNC", "--target", "employer", "--letter", "jcnc-agenda", "--invite",
        "invitation", "--meeting-date", "14/01/2027",
    )  # fmt: skip
    assert bad.exit_code == 2
    assert "--meeting-date: '14/01/2027' is not a date: give it as YYYY-MM-DD" in bad.output
    with pytest.raises(CampaignError, match="no wave named"):
        get_wave(officials, "JCNC")
    # Today is still to come; an edit is held to the same rule.
    create_wave(officials, "JCNC", jcnc_spec(date.today()), SETTINGS)
    with pytest.raises(CampaignError, match="is in the past"):
        edit_wave(officials, "JCNC", WaveSpec(meeting_date=yesterday.isoformat()), SETTINGS)


def _send_all(engine, tmp_path) -> datetime:
    """The members send their letters; returns when they went."""
    for number in ("J102", "J201"):
        found = letter_for_member(engine, "JCNC", number)
        assert send_for_me(engine, SETTINGS, found, found.text, "1 High Street|Sevenoaks")
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None)
    went = [letter["sent_at"] for letter in letters(engine)]
    assert all(went)
    return max(went)


def at(day: date, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def test_chased_working_days_before_the_meeting_not_after_the_reply_window(officials, tmp_path):
    meeting = date.today() + timedelta(days=40)
    # A 30-working-day reply window would end after the meeting: the meeting decides.
    create_wave(officials, "JCNC", jcnc_spec(meeting, reply_days=30, chase_before=5), SETTINGS)
    launch_wave(officials, "JCNC", SETTINGS)
    _send_all(officials, tmp_path)
    due = working_days_before(meeting, 5, "England")
    assert (meeting - due).days >= 7  # five working days: at least a week
    before = chase(officials, SETTINGS, now=at(due - timedelta(days=1), 18))
    assert (before.overdue, before.chasers) == (0, 0)
    result = chase(officials, SETTINGS, now=at(due))
    assert (result.overdue, result.chasers) == (2, 2)
    chasers = {c["target_name"]: c for c in letters(officials, "chaser")}
    kent = chasers["Kent County Council"]
    long_meeting = f"{meeting.day} {meeting:%B %Y}"
    assert kent["subject"] == (
        f"Before the JCNC on {long_meeting}: our agenda item on staff health and inspection"
    )
    assert "(Ann Patel, Ben Okafor and Cara Lee)" in kent["body_text"]
    assert "Ann Patel\nwith Ben Okafor and Cara Lee\n" in kent["body_text"]
    # The lead is asked to send it, and told the meeting is near rather than a reply window's end.
    send_outbox(officials, SETTINGS, FolderTransport(tmp_path / "chasers"), rate=10_000, sleep=lambda s: None)
    invitations = [parse_message(p.read_bytes()) for p in sorted((tmp_path / "chasers").glob("*"))]
    texts = {m["To"]: " ".join(m.get_body(("plain",)).get_content().split()) for m in invitations}
    assert (
        f"The meeting your letter is for is on {long_meeting}"
        in texts["Ann Patel <j102@members.example.org>"]
    )
    assert chase(officials, SETTINGS, now=at(due + timedelta(days=2))).chasers == 0


def test_nothing_is_chased_from_the_meeting_day_on(officials, tmp_path):
    meeting = date.today() + timedelta(days=40)
    create_wave(officials, "JCNC", jcnc_spec(meeting, reply_days=30), SETTINGS)
    launch_wave(officials, "JCNC", SETTINGS)
    _send_all(officials, tmp_path)
    # chase did not run before the meeting (cron was off): afterwards the letters are overdue
    # all the same, but a chaser asking for an agenda item would come too late.
    result = chase(officials, SETTINGS, now=at(meeting))
    assert (result.overdue, result.chasers) == (2, 0)
    assert letters(officials, "chaser") == []
    assert {letter["state"] for letter in letters(officials)} == {"overdue"}
    with officials.connect() as conn:
        kinds = set(conn.execute(select(outbox_table.c.kind)).scalars())
    assert "chaser_invitation" not in kinds


def test_a_letter_sent_after_the_chase_day_waits_a_working_day(officials, tmp_path):
    # The meeting is close: its chase day has already gone when the letters go.
    meeting = date.today() + timedelta(days=3)
    create_wave(officials, "JCNC", jcnc_spec(meeting, reply_days=30, chase_before=5), SETTINGS)
    launch_wave(officials, "JCNC", SETTINGS)
    went = _send_all(officials, tmp_path)
    assert chase(officials, SETTINGS, now=utcnow()).overdue == 0
    assert went.date() < meeting


def test_outside_one_per_target_each_member_signs_alone(officials, tmp_path):
    letter = tmp_path / "signed.txt"
    letter.write_text(
        "{% block subject %}Signed{% endblock %}\n{% block body %}\nDear {{ target.salutation }},\n\n"
        "From {{ letter.officials }}[{{ letter.co_signatories }}] for {{ wave.meeting_date or 'no meeting' }}.\n"
        "{% endblock %}\n"
    )
    spec = jcnc_spec(date.today() + timedelta(days=40), letter=str(letter), chaser="")
    create_wave(officials, "Each", spec, SETTINGS)
    edit_wave(officials, "Each", WaveSpec(one_per_target=False, meeting_date=""), SETTINGS)
    assert launch_wave(officials, "Each", SETTINGS).created == 4
    assert sorted(letter["body_text"].split("\n")[2] for letter in letters(officials)) == [
        "From Ann Patel[] for no meeting.",
        "From Ben Okafor[] for no meeting.",
        "From Cara Lee[] for no meeting.",
        "From Eve Morgan[] for no meeting.",
    ]
