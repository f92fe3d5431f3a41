"""Overdue letters in working days, chasers, and asking members whether their MP replied."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import requests
from sqlalchemy import select
from test_replies import fill, sent  # noqa: F401  (the sent-wave fixture)
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401
from test_web import Site

from engine.errors import CampaignError
from engine.followup.chase import chase, working_days_after
from engine.inbox.ingest import Ingester
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.links import answer_link
from engine.letters.waves import create_wave
from engine.mail.outbox import parse_message
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.store.models import letter_table, member_table, outbox_table, utcnow


def test_working_days_skip_weekends_and_each_nations_bank_holidays():
    friday = date(2026, 11, 27)
    # St Andrew's Day, Monday 30 November 2026, is a bank holiday in Scotland only.
    assert working_days_after(friday, 1, "England") == date(2026, 11, 30)
    assert working_days_after(friday, 1, "Scotland") == date(2026, 12, 1)
    # Christmas 2026: Friday 25th, and Boxing Day (a Saturday) moves to Monday 28th.
    assert working_days_after(date(2026, 12, 24), 2, "Wales") == date(2026, 12, 30)
    # 2 January is a holiday in Scotland, not in Northern Ireland; 17 March the other way round.
    assert working_days_after(date(2026, 12, 31), 1, "Scotland") == date(2027, 1, 5)
    assert working_days_after(date(2026, 12, 31), 1, "Northern Ireland") == date(2027, 1, 4)
    assert working_days_after(date(2027, 3, 16), 1, "Northern Ireland") == date(2027, 3, 18)
    assert working_days_after(date(2027, 3, 16), 1, None) == date(2027, 3, 17)  # unknown: England's


def letters_of(engine, kind: str) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(letter_table).where(letter_table.c.kind == kind).order_by(letter_table.c.id)
            )
        ]


def queued(engine, kind: str) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(outbox_table).where(outbox_table.c.kind == kind, outbox_table.c.status == "queued")
            )
        ]


def test_unanswered_letters_become_overdue_after_the_window_and_get_one_chaser(sent):  # noqa: F811
    engine, letters = sent
    went = min(letter["sent_at"] for letter in letters.values())
    due = working_days_after(went.date(), 10, "England")
    # The day before the tenth working day: nothing.
    before = chase(
        engine, SETTINGS, now=went.replace(year=due.year, month=due.month, day=due.day) - timedelta(days=1)
    )
    assert (before.overdue, before.chasers) == (0, 0)
    on_time = went.replace(year=due.year, month=due.month, day=due.day) + timedelta(hours=1)
    result = chase(engine, SETTINGS, now=on_time)
    sent_count = len(letters)
    assert (result.overdue, result.chasers) == (sent_count, sent_count)
    assert result.by_wave["Employers"]["overdue"] == sent_count
    chasers = letters_of(engine, "chaser")
    assert {c["parent_id"] for c in chasers} == {letter["id"] for letter in letters.values()}
    assert all(c["state"] == "drafted" and "I have not yet had a reply" in c["body_text"] for c in chasers)
    assert len(queued(engine, "chaser_invitation")) == sent_count
    # Running it twice does nothing more.
    again = chase(engine, SETTINGS, now=on_time + timedelta(days=3))
    assert (again.overdue, again.chasers) == (0, 0)
    assert len(letters_of(engine, "chaser")) == sent_count


def test_a_reply_to_the_chaser_answers_the_letter_it_chased(sent):  # noqa: F811
    engine, letters = sent
    went = min(letter["sent_at"] for letter in letters.values())
    chase(engine, SETTINGS, now=went + timedelta(days=30))
    original = letters["direct-reply-ref-in-subject"]
    with engine.connect() as conn:
        chaser = conn.execute(
            select(letter_table).where(
                letter_table.c.parent_id == original["id"], letter_table.c.kind == "chaser"
            )
        ).one()
    # The employer answers the chaser, writing to the address that carries its reference.
    data = fill(
        "direct-reply-plus-address",
        {**original, "placeholders": {**original["placeholders"], "REF": chaser.reference}},
    ).replace(b"we will reply in full next week.", b"we do not agree that this is a matter for the trust.")
    Ingester(engine, SETTINGS).record(data, "eml")
    with engine.connect() as conn:
        states = dict(
            conn.execute(
                select(letter_table.c.kind, letter_table.c.state).where(
                    letter_table.c.id.in_([original["id"], chaser.id])
                )
            ).all()
        )
    assert states == {"letter": "replied", "chaser": "drafted"}
    # and the employer's follow-up is drafted for the member.
    assert [f["parent_id"] for f in letters_of(engine, "follow_up")] == [original["id"]]


@pytest.fixture
def mp_sent(sample, tmp_path):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    for number in ("M100001", "M100002", "M100003"):
        found = letter_for_member(sample, "MPs", number)
        assert send_for_me(
            sample, SETTINGS, found, found.text, found.member["address"] or "1 High Street|Sevenoaks"
        )
    send_outbox(sample, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None)
    return sample


def test_members_are_asked_whether_their_mp_replied_then_reminded_once(mp_sent, tmp_path):
    engine = mp_sent
    now = utcnow()
    assert chase(engine, SETTINGS, now=now + timedelta(days=13)).questionnaires == 0
    asked = chase(engine, SETTINGS, now=now + timedelta(days=14, hours=1))
    assert asked.questionnaires == 3
    assert chase(engine, SETTINGS, now=now + timedelta(days=15)).questionnaires == 0
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "asked"), rate=10_000, sleep=lambda s: None)
    [path, *_] = sorted((tmp_path / "asked").glob("*questionnaire*"))
    message = parse_message(path.read_bytes())
    text = message.get_body(("plain",)).get_content()
    assert "Has" in message["Subject"] and "replied to your letter" in message["Subject"]
    assert "/answer/" in text and "organising@union.example" in text
    assert message["List-Unsubscribe"]

    # One member answers on the page the link opens; the button records it.
    letter = letter_for_member(engine, "MPs", "M100001").letter
    link = answer_link("", SETTINGS.secret, letter["reference"], letter["link_nonce"], "not_yet")
    letters_asked = [p.name for p in (tmp_path / "asked").glob(f"*questionnaire-{letter['reference']}*")]
    assert len(letters_asked) == 1
    own = (
        parse_message((tmp_path / "asked" / letters_asked[0]).read_bytes()).get_body(("plain",)).get_content()
    )
    assert SETTINGS.base_url + link in own
    with Site(engine) as site:
        page = requests.get(site.base + link, timeout=10)
        assert page.status_code == 200 and "Not yet" in page.text
        assert (
            letter_for_member(engine, "MPs", "M100001").letter["mp_answer"] is None
        )  # a GET records nothing
        done = requests.post(site.base + link, timeout=10)
        assert done.status_code == 200 and "Thank you" in done.text
        token = link.split("/")[3]
        forged = requests.post(site.base + link.replace(token, "A" * len(token)), timeout=10)
        assert forged.status_code == 404
        other = requests.post(site.base + link.replace("not-yet", "maybe"), timeout=10)
        assert other.status_code == 404
    assert letter_for_member(engine, "MPs", "M100001").letter["mp_answer"] == "not_yet"

    # A week on, the two who did not answer get one reminder; never a second.
    reminded = chase(engine, SETTINGS, now=now + timedelta(days=21, hours=2))
    assert reminded.reminders == 2
    assert chase(engine, SETTINGS, now=now + timedelta(days=40)).reminders == 0
    reminders = queued(engine, "questionnaire_reminder")
    with engine.connect() as conn:
        answered = conn.execute(
            select(member_table.c.email).where(member_table.c.membership_no == "M100001")
        ).scalar_one()
    assert len(reminders) == 2 and all(answered not in r["to_addr"] for r in reminders)
    assert all(r["subject"].startswith("Reminder:") for r in reminders)


def test_chase_names_a_wave_that_does_not_exist_or_is_not_launched(sample):  # noqa: F811
    with pytest.raises(CampaignError, match="no wave named"):
        chase(sample, SETTINGS, "Nope")
    create_wave(sample, "Draft", MP_WAVE, SETTINGS)
    with pytest.raises(CampaignError, match="has not been launched"):
        chase(sample, SETTINGS, "Draft")
