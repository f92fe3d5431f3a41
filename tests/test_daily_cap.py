"""Flood control: a wave's daily cap of letters to one target, on a real SMTP server, both databases."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from smtp_server import SmtpServer
from sqlalchemy import select
from test_waves import SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.errors import CampaignError
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.waves import WaveSpec, create_wave, edit_wave, get_wave
from engine.mail.daily_cap import london_day, next_day_start
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport, SmtpTransport
from engine.settings import Settings
from engine.store.models import member_table, outbox_table, target_day_table

LONDON = ZoneInfo("Europe/London")
SEVENOAKS, TIVERTON = "E14001465", "E14001495"
ALDEN, PRIDEAUX = "harriet.alden.mp@parliament.example", "owen.prideaux.mp@parliament.example"
SOS = "sos@education.example"
# A Tuesday in winter (London on GMT), well after the letters are queued.
FIRST_DAY = datetime(2031, 3, 4, 9, 0, tzinfo=LONDON)
MEMBERS = [f"M10000{n}" for n in range(1, 10)]


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


def at(moment: datetime):
    return lambda: moment.astimezone(UTC)


def no_sleep(seconds: float) -> None:
    pass


def send(engine, smtp, moment: datetime, **options):
    return send_outbox(
        engine, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep, clock=at(moment), **options
    )


def letters_to(smtp) -> Counter:
    """Letters received by each target (members' receipts and invitations left out)."""
    return Counter(
        address
        for received in smtp.recorder.received
        if received.message["X-Campaign-Ref"] and "via" in received.message["From"]
        for address in received.rcpt_tos
    )


def confirm(engine, wave: str, members: list[str]) -> None:
    """Each member asks for their letter to be sent, as it stands."""
    for membership_no in members:
        found = letter_for_member(engine, wave, membership_no)
        assert send_for_me(engine, SETTINGS, found, found.text, "1 Orchard Way\nSevenoaks\nBR8 7RE")


def launch_capped(engine, smtp, name: str, spec: WaveSpec, members: list[str]) -> None:
    """A wave for `members` only, launched, invitations sent the day before, letters confirmed."""
    spec = replace(spec, where=[f"membership_no={','.join(members)}"])
    create_wave(engine, name, spec, SETTINGS)
    assert launch_wave(engine, name, SETTINGS).created == len(members)
    assert send(engine, smtp, FIRST_DAY - timedelta(days=1)).sent == len(members)
    confirm(engine, name, members)
    smtp.recorder.received.clear()


@pytest.fixture
def mp_wave(sample, smtp):  # noqa: F811
    """Seven members write to Harriet Alden MP (Sevenoaks) and two to Owen Prideaux MP, capped at 3."""
    with sample.begin() as conn:
        for members, seat in ((MEMBERS[:7], SEVENOAKS), (MEMBERS[7:], TIVERTON)):
            conn.execute(
                member_table.update()
                .where(member_table.c.membership_no.in_(members))
                .values(constituency_code=seat, mp_status="resolved")
            )
    spec = WaveSpec(target="mp", letter="mp-inspection", invite="invitation", daily_cap=3)
    launch_capped(sample, smtp, "MPs", spec, MEMBERS)
    return sample


def test_a_cap_of_three_sends_three_a_day_to_each_target_and_holds_the_rest_for_the_next_days(mp_wave, smtp):
    first = send(mp_wave, smtp, FIRST_DAY)
    # Five letters go (three to Alden, two to Prideaux), each with its member's receipt.
    assert (first.sent, first.held, first.failed) == (10, 4, 0)
    assert letters_to(smtp) == {ALDEN: 3, PRIDEAUX: 2}
    with mp_wave.connect() as conn:
        held = conn.execute(
            select(outbox_table.c.next_attempt_at, outbox_table.c.attempts, outbox_table.c.to_addr).where(
                outbox_table.c.kind == "letter", outbox_table.c.status == "queued"
            )
        ).all()
    # They wait, untried, for midnight in London.
    assert {(when, attempts) for when, attempts, _ in held} == {(datetime(2031, 3, 5, 0, 0, tzinfo=UTC), 0)}
    assert all(ALDEN in to for _, _, to in held) and len(held) == 4
    # Later the same day nothing more goes.
    later = send(mp_wave, smtp, FIRST_DAY.replace(hour=23, minute=59))
    assert (later.sent, later.held) == (0, 0)
    # The next day three more go, and one waits again; the day after, the last one.
    second = send(mp_wave, smtp, FIRST_DAY + timedelta(days=1))
    assert (second.sent, second.held) == (6, 1)
    assert letters_to(smtp) == {ALDEN: 6, PRIDEAUX: 2}
    third = send(mp_wave, smtp, FIRST_DAY + timedelta(days=2))
    assert (third.sent, third.held) == (2, 0)
    assert letters_to(smtp) == {ALDEN: 7, PRIDEAUX: 2}
    with mp_wave.connect() as conn:
        counted = dict(
            conn.execute(
                select(target_day_table.c.day, target_day_table.c.sent).where(
                    target_day_table.c.address == ALDEN
                )
            ).all()
        )
    assert counted == {
        FIRST_DAY.date(): 3,
        FIRST_DAY.date() + timedelta(days=1): 3,
        FIRST_DAY.date() + timedelta(days=2): 1,
    }


def test_a_fixed_wave_is_capped_the_same(sample, smtp):  # noqa: F811
    spec = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to=f"Secretary of State for Education <{SOS}>",
        daily_cap=3,
    )
    launch_capped(sample, smtp, "SoS", spec, MEMBERS[:5])
    first = send(sample, smtp, FIRST_DAY)
    assert (first.sent, first.held) == (6, 2)
    assert letters_to(smtp) == {SOS: 3}
    second = send(sample, smtp, FIRST_DAY + timedelta(days=1))
    assert (second.sent, second.held) == (4, 0)
    assert letters_to(smtp) == {SOS: 5}


def test_two_workers_racing_for_the_last_slots_never_exceed_the_cap(sample, smtp, tmp_path):  # noqa: F811
    """The slot is taken by one upsert: the row's lock on PostgreSQL, the write lock on SQLite."""
    spec = WaveSpec(
        target="fixed", letter="secretary-of-state", invite="invitation", to=f"Minister <{SOS}>", daily_cap=3
    )
    launch_capped(sample, smtp, "SoS", spec, MEMBERS)
    results = {}
    start = threading.Barrier(2)

    def work(name: str) -> None:
        start.wait()
        results[name] = send_outbox(
            sample,
            SETTINGS,
            FolderTransport(tmp_path / name),
            rate=0,
            batch=1,
            sleep=no_sleep,
            clock=at(FIRST_DAY),
        )

    workers = [threading.Thread(target=work, args=(name,)) for name in ("one", "two")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    letters = [p for name in ("one", "two") for p in (tmp_path / name).glob("*-letter-*.eml")]
    assert len(letters) == 3
    assert results["one"].held + results["two"].held == 6
    with sample.connect() as conn:
        assert conn.execute(select(target_day_table.c.sent)).scalars().all() == [3]


def test_the_day_is_londons_not_utcs(sample, smtp):  # noqa: F811
    """In summer London is an hour ahead: 00:10 there is still the previous day in UTC."""
    spec = WaveSpec(
        target="fixed", letter="secretary-of-state", invite="invitation", to=f"Minister <{SOS}>", daily_cap=1
    )
    launch_capped(sample, smtp, "SoS", spec, MEMBERS[:2])
    evening = datetime(2031, 6, 10, 23, 30, tzinfo=LONDON)
    first = send(sample, smtp, evening)
    assert (letters_to(smtp), first.held) == ({SOS: 1}, 1)
    after_midnight = datetime(2031, 6, 11, 0, 10, tzinfo=LONDON)
    assert after_midnight.astimezone(UTC).date() == evening.astimezone(UTC).date()
    send(sample, smtp, after_midnight)
    assert letters_to(smtp) == {SOS: 2}
    assert london_day(after_midnight.astimezone(UTC)) == after_midnight.date()
    assert next_day_start(evening.date()) == datetime(2031, 6, 10, 23, 0, tzinfo=UTC)


def test_a_letter_that_does_not_go_gives_its_slot_back(sample, smtp):  # noqa: F811
    spec = WaveSpec(
        target="fixed", letter="secretary-of-state", invite="invitation", to=f"Minister <{SOS}>", daily_cap=1
    )
    launch_capped(sample, smtp, "SoS", spec, MEMBERS[:2])
    smtp.recorder.refuse[SOS] = "451 4.3.0 Mailbox busy, try later"
    busy = send(sample, smtp, FIRST_DAY)
    # Neither went, so neither used up the day's one slot: both were tried, none held.
    assert (busy.sent, busy.retrying, busy.held) == (0, 2, 0)
    del smtp.recorder.refuse[SOS]
    again = send(sample, smtp, FIRST_DAY + timedelta(hours=1))
    assert (letters_to(smtp), again.held) == ({SOS: 1}, 1)


def test_no_cap_sends_everything_and_invitations_never_count(sample, smtp):  # noqa: F811
    spec = WaveSpec(
        target="fixed", letter="secretary-of-state", invite="invitation", to=f"Minister <{SOS}>", daily_cap=0
    )
    launch_capped(sample, smtp, "SoS", spec, MEMBERS)
    result = send(sample, smtp, FIRST_DAY)
    assert (result.sent, result.held) == (18, 0)
    assert letters_to(smtp) == {SOS: 9}


def test_the_cap_defaults_to_the_setting_and_can_change_after_launch(sample):  # noqa: F811
    settings = Settings.from_env(
        {"CAMPAIGN_SECRET": SETTINGS.secret, "CAMPAIGN_DAILY_CAP": "7"}, templates_dir=SETTINGS.templates_dir
    )
    create_wave(sample, "MPs", WaveSpec(target="mp", letter="mp-inspection", invite="invitation"), settings)
    assert get_wave(sample, "MPs")["daily_cap"] == 7
    launch_wave(sample, "MPs", settings)
    assert edit_wave(sample, "MPs", WaveSpec(daily_cap=2), settings)["daily_cap"] == 2
    with pytest.raises(CampaignError, match=r"can no longer be edited \(except --daily-cap\)"):
        edit_wave(sample, "MPs", WaveSpec(daily_cap=2, reply_days=3), settings)
    with pytest.raises(CampaignError) as refused:
        Settings.from_env({"CAMPAIGN_DAILY_CAP": "fifty"})
    assert str(refused.value) == "CAMPAIGN_DAILY_CAP: 'fifty' is not a whole number (0 or more)"


def test_cli_daily_cap_on_create_and_the_held_line_of_send(cli, sample, smtp):  # noqa: F811
    result = cli(
        "wave", "create", "SoS", "--target", "fixed", "--letter", "secretary-of-state", "--invite",
        "invitation", "--to", f"Minister <{SOS}>", "--where", "membership_no=M100001,M100002",
        "--daily-cap", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "at most 1 letter(s) a day to any one target (the rest wait for the next days)" in result.stdout
    assert cli("wave", "launch", "SoS").exit_code == 0
    assert cli("send", "--once", "--rate", "1000", env={"SMTP_URL": smtp.url}).exit_code == 0
    confirm(sample, "SoS", ["M100001", "M100002"])
    result = cli("send", "--once", "--rate", "1000", env={"SMTP_URL": smtp.url})
    assert result.exit_code == 0, result.output
    assert "2 sent, 0 to retry later, 0 failed.\n" in result.stdout  # one letter and its receipt
    assert "1 letter(s) held by their target's daily cap: they go from the next day" in result.stdout
    assert letters_to(smtp) == {SOS: 1}
    bad = cli("wave", "edit", "SoS", "--daily-cap", "-1")
    assert bad.exit_code == 2 and "-1 is not in the range x>=0" in bad.stderr
    result = cli("send", "--once", "--json", env={"SMTP_URL": smtp.url})
    assert '"held": 0' in result.stdout  # not due again until tomorrow
