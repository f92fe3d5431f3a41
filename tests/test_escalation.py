"""Escalation waves: --after WAVE --outcome … chooses members by what became of their earlier letter."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from test_targeting import SETTINGS, four_nations  # noqa: F401  (the members fixture)

from engine.errors import CampaignError
from engine.followup.chase import chase, record_answer
from engine.inbox.staff import log_paper_reply
from engine.letters.confirm import letter_for_member, not_for_me, send_for_me, sent_myself
from engine.letters.launch import launch_wave, left_out
from engine.letters.waves import WaveSpec, create_wave, edit_wave, get_wave
from engine.lookup.resolve import resolve_members
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.members.importer import import_members
from engine.store.models import letter_table, member_table, utcnow
from engine.store.states import mark_bounced

EMPLOYERS = "Employers"
SOS = "Secretary of State <ministers@education.example.org>"
HOLDING = "Thank you for your letter. We will respond in full once we have considered it."
REFUSAL = "We are unable to support this request and do not agree that it is a matter for us."
SUPPORTIVE = "We share your concern and fully support the call."

# What became of each member's letter in the employer wave (see `history`).
STORY = {
    "T1": "refused (a holding reply first, then a refusal)",
    "T2": "supportive (a refusal first, then a supportive answer)",
    "T3": "silent: sent six weeks ago, no reply",
    "T4": "silent: sent six weeks ago, only a holding reply four weeks ago",
    "T5": "bounced",
    "T6": "silent: the member sent it themselves six weeks ago",
    "T7": "not sent: the member opted out",
    "T8": "waiting: sent today",
}


def _letter_id(engine, number: str, wave: str = EMPLOYERS) -> int:
    return letter_for_member(engine, wave, number).letter["id"]


def _backdate(engine, number: str, days: int, wave: str = EMPLOYERS) -> None:
    """As if the letter had gone `days` ago."""
    when = utcnow() - timedelta(days=days)
    lt = letter_table.c
    letter_id = _letter_id(engine, number, wave)
    with engine.begin() as conn:
        conn.execute(letter_table.update().where(lt.id == letter_id).values(decided_at=when))
        conn.execute(
            letter_table.update().where(lt.id == letter_id, lt.sent_at.is_not(None)).values(sent_at=when)
        )


@pytest.fixture
def history(four_nations, tmp_path):  # noqa: F811
    """An employer wave whose eight letters ended as STORY says, through the real steps."""
    engine = four_nations
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "Membership No,First Name,Last Name,Email,Postcode,School URN,Role\n"
        "T7,Ann,T7,t7@members.example.org,TN13 1AA,100001,Teacher\n"
        "T8,Ann,T8,t8@members.example.org,TN13 1AA,100001,Teacher\n"
    )
    import_members(engine, extra)
    resolve_members(engine, None)
    spec = WaveSpec(target="employer", letter="employer-wellbeing", invite="invitation", nations="all")
    create_wave(engine, EMPLOYERS, spec, SETTINGS)
    assert launch_wave(engine, EMPLOYERS, SETTINGS).created == 8
    for number in ("T1", "T2", "T3", "T4", "T5", "T8"):
        found = letter_for_member(engine, EMPLOYERS, number)
        assert send_for_me(engine, SETTINGS, found, found.text, None)
    assert sent_myself(engine, letter_for_member(engine, EMPLOYERS, "T6"), None)
    assert not_for_me(engine, letter_for_member(engine, EMPLOYERS, "T7"))
    delivered = send_outbox(
        engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None
    )
    assert delivered.failed == 0
    now = utcnow()
    for number in ("T1", "T2", "T3", "T4", "T6"):
        _backdate(engine, number, 42)

    def reply(number: str, days_ago: int, text: str) -> None:
        reference = letter_for_member(engine, EMPLOYERS, number).letter["reference"]
        log_paper_reply(engine, SETTINGS, reference, now - timedelta(days=days_ago), note=text)

    reply("T1", 30, HOLDING)
    reply("T1", 20, REFUSAL)
    reply("T2", 30, REFUSAL)
    reply("T2", 20, SUPPORTIVE)
    reply("T4", 28, HOLDING)
    with engine.begin() as conn:
        assert mark_bounced(conn, _letter_id(engine, "T5"), "550 5.1.1 no such user", member_side=False)
    return engine


def escalate(
    engine, outcomes: str, name: str = "Escalation", after: str = EMPLOYERS
) -> tuple[set[str], dict[str, str]]:
    """(members written for, {member left out: detail}) for a fixed wave after the employer wave."""
    spec = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to=SOS,
        nations="all",
        after=after,
        outcomes=outcomes,
    )
    create_wave(engine, name, spec, SETTINGS)
    result = launch_wave(engine, name, SETTINGS, list_skipped=True)
    assert {s["reason"] for s in result.skipped_members} <= {"not_selected"}
    details = {s["membership_no"]: s["detail"] for s in result.skipped_members}
    with engine.connect() as conn:
        everyone = set(conn.execute(select(member_table.c.membership_no)).scalars())
    return everyone - set(details), details


def test_escalation_writes_for_exactly_the_refused_and_silent_members(history):
    chosen, details = escalate(history, "refused,silent")
    assert chosen == {"T1", "T3", "T4", "T6"}
    assert details == {
        "T2": "letter in 'Employers' supportive, not refused or silent",
        "T5": "letter in 'Employers' bounced, not refused or silent",
        "T7": "letter in 'Employers' not-sent, not refused or silent",
        "T8": "letter in 'Employers' waiting, not refused or silent",
    }
    assert left_out(history, "Escalation") == {"not_selected": 4}
    # Each chosen member's letter goes to the one fixed recipient.
    with history.connect() as conn:
        targets = set(
            conn.execute(
                select(letter_table.c.target_email).where(
                    letter_table.c.wave_id == get_wave(history, "Escalation")["id"]
                )
            ).scalars()
        )
    assert targets == {"ministers@education.example.org"}


@pytest.mark.parametrize(
    ("outcomes", "chosen"),
    [
        ("refused", {"T1"}),
        ("supportive", {"T2"}),
        ("replied", {"T1", "T2"}),
        ("holding", {"T4"}),
        ("silent", {"T3", "T4", "T6"}),
        ("waiting", {"T8"}),
        ("bounced", {"T5"}),
        ("not_sent", {"T7"}),
        ("non-committal", set()),
        ("any", set(STORY)),
    ],
)
def test_each_outcome_word_chooses_its_members(history, outcomes, chosen):
    assert escalate(history, outcomes)[0] == chosen


def test_overdue_letters_count_as_silent_once_chase_has_run(history):
    result = chase(history, SETTINGS, EMPLOYERS)
    assert result.overdue == 3  # T3, T4 and T6: T4's holding reply restarted its window, now past too
    assert escalate(history, "silent")[0] == {"T3", "T4", "T6"}


def test_a_recent_holding_reply_restarts_the_window(history):
    reference = letter_for_member(history, EMPLOYERS, "T3").letter["reference"]
    log_paper_reply(history, SETTINGS, reference, utcnow() - timedelta(days=1), note=HOLDING)
    chosen, details = escalate(history, "silent")
    assert "T3" not in chosen
    assert details["T3"] == "letter in 'Employers' waiting (holding reply), not silent"
    assert "T3" in escalate(history, "holding", name="Held")[0]


def test_members_without_a_letter_in_the_earlier_wave_are_left_out(history, tmp_path):
    extra = tmp_path / "late.csv"
    extra.write_text(
        "Membership No,First Name,Last Name,Email,Postcode,School URN\n"
        "T9,Ann,T9,t9@members.example.org,TN13 1AA,100001\n"
    )
    import_members(history, extra)
    chosen, details = escalate(history, "any")
    assert details == {"T9": "no letter in 'Employers'"}


def test_where_and_after_combine_and_edit_changes_each_alone(history):
    spec = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to=SOS,
        nations="all",
        where=["role=teacher"],
        after=EMPLOYERS,
        outcomes="silent",
    )
    create_wave(history, "Teachers", spec, SETTINGS)
    wave = edit_wave(history, "Teachers", WaveSpec(where=["role=teacher,headteacher"]), SETTINGS)
    after = {"wave": EMPLOYERS, "wave_id": get_wave(history, EMPLOYERS)["id"], "outcomes": ["silent"]}
    assert wave["filters"] == {"role": ["teacher", "headteacher"], "@after": after}
    wave = edit_wave(history, "Teachers", WaveSpec(after=EMPLOYERS, outcomes="refused"), SETTINGS)
    assert wave["filters"] == {
        "role": ["teacher", "headteacher"],
        "@after": {**after, "outcomes": ["refused"]},
    }
    wave = edit_wave(history, "Teachers", WaveSpec(after=""), SETTINGS)
    assert wave["filters"] == {"role": ["teacher", "headteacher"]}


@pytest.mark.parametrize(
    ("after", "outcomes", "message"),
    [
        (
            EMPLOYERS,
            "refused,ignored",
            "--outcome: 'ignored' is not an outcome: use refused, silent, holding, waiting, supportive, "
            "non_committal, replied, bounced, not_sent, any (several separated by commas)",
        ),
        (
            EMPLOYERS,
            None,
            "--after: say which outcomes of 'Employers' to write after, e.g. --outcome refused,silent",
        ),
        (
            None,
            "refused",
            "--outcome: name the earlier wave too, e.g. --after 'Employers' --outcome refused,silent",
        ),
        ("Employers 2025", "refused", "--after: no wave named 'Employers 2025' (see `campaign wave list`)"),
        ("Escalation", "refused", "--after: 'Escalation' is this wave: name an earlier one"),
    ],
)
def test_bad_after_or_outcome_is_refused_with_one_line(history, after, outcomes, message):
    spec = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to=SOS,
        after=after,
        outcomes=outcomes,
    )
    with pytest.raises(CampaignError) as caught:
        create_wave(history, "Escalation", spec, SETTINGS)
    assert str(caught.value) == message


def test_cli_shows_the_rule_and_counts_those_left_out(history, cli):
    base = ("wave", "create", "SoS", "--target", "fixed", "--letter", "secretary-of-state")
    base += ("--invite", "invitation", "--to", SOS, "--nations", "all")
    created = cli(*base, "--after", EMPLOYERS, "--outcome", "refused,silent")
    assert created.exit_code == 0, created.output
    assert "members: their letter in 'Employers' was refused or silent, in all nations" in created.output
    launched = cli("wave", "launch", "SoS")
    assert launched.exit_code == 0, launched.output
    assert "4 letter(s) created" in launched.output
    assert "skipped 4: not matching --where or --after/--outcome" in launched.output
    status = cli("wave", "status", "SoS")
    assert "members: their letter in 'Employers' was refused or silent" in status.output
    assert (
        "members by their letter in 'Employers': refused 1, silent 2, holding 1, waiting 1, supportive 1, "
        "bounced 1, not sent 1" in status.output
    )
    assert "left out 4: not matching --where or --after/--outcome" in status.output
    as_json = json.loads(cli("wave", "status", "SoS", "--json").stdout)
    assert as_json["letters"] == 4
    assert as_json["after"]["outcomes"] == ["refused", "silent"]
    assert as_json["after"]["members"] == {
        "refused": 1,
        "silent": 2,
        "holding": 1,
        "waiting": 1,
        "supportive": 1,
        "bounced": 1,
        "not_sent": 1,
    }
    listed = {w["name"]: w for w in json.loads(cli("wave", "list", "--json").stdout)}
    assert listed["SoS"]["after"]["wave"] == EMPLOYERS and listed[EMPLOYERS]["after"] is None
    shown = json.loads(cli("wave", "show", "SoS", "--json").stdout)
    assert shown["after"] == listed["SoS"]["after"]


def test_cli_bad_inputs_exit_2_with_one_line(history, cli):
    base = ("wave", "create", "SoS", "--target", "fixed", "--letter", "secretary-of-state")
    base += ("--invite", "invitation", "--to", SOS)
    result = cli(*base, "--after", EMPLOYERS, "--outcome", "angry")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(
            "--outcome: 'angry' is not an outcome: use refused, silent, holding, waiting, supportive, "
            "non_committal, replied, bounced, not_sent, any (several separated by commas)"
        )
    )
    assert cli(*base, "--outcome", "refused").exit_code == 2
    assert "SoS" not in cli("wave", "list").output
    # A wave that follows one not launched yet cannot be launched: nobody has a letter in it.
    draft = ("wave", "create", "Later", "--target", "employer", "--letter", "employer-wellbeing")
    assert cli(*draft, "--invite", "invitation").exit_code == 0
    assert cli(*base, "--after", "Later", "--outcome", "silent").exit_code == 0
    result = cli("wave", "launch", "SoS")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(
            "--after: wave 'Later' has not been launched, so no member has a letter in it yet: launch it first"
        )
    )
    assert get_wave(history, "SoS")["status"] == "draft"


def test_an_mp_who_replied_to_the_member_is_not_silent(four_nations, tmp_path):  # noqa: F811
    engine = four_nations
    create_wave(
        engine,
        "MPs",
        WaveSpec(target="mp", letter="mp-inspection", invite="invitation", nations="all"),
        SETTINGS,
    )
    launch_wave(engine, "MPs", SETTINGS)
    for number in ("T1", "T2", "T3"):
        found = letter_for_member(engine, "MPs", number)
        assert send_for_me(engine, SETTINGS, found, found.text, "1 High Street|Sevenoaks")
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None)
    for number in ("T1", "T2", "T3"):
        _backdate(engine, number, 42, "MPs")
    # "Has your MP replied?": T1 says yes, T2 no; T3 has not answered.
    with engine.begin() as conn:
        record_answer(conn, _letter_id(engine, "T1", "MPs"), "yes")
        record_answer(conn, _letter_id(engine, "T2", "MPs"), "no")
    assert escalate(engine, "silent", after="MPs")[0] == {"T2", "T3"}
    assert escalate(engine, "replied", name="Replied", after="MPs")[0] == {"T1"}
