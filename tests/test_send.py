"""Delivering the outbox to a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from smtp_server import SmtpServer
from sqlalchemy import func, select
from test_waves import MP_WAVE, SETTINGS, load_sample, sample  # noqa: F401  (the sample-data fixture)

from engine.errors import CampaignError
from engine.letters.launch import launch_wave
from engine.letters.links import verp_tag
from engine.letters.waves import create_wave
from engine.mail.outbox import export_outbox
from engine.mail.send import pause_state, recover_abandoned, resend_uncertain, send_outbox
from engine.mail.smtp import FolderTransport, SmtpTransport
from engine.settings import Settings
from engine.store.db import init_db, open_engine
from engine.store.models import letter_table, member_table, outbox_table


@pytest.fixture
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture
def launched(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    return sample


def statuses(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(outbox_table.c.status, func.count()).group_by(outbox_table.c.status)).all()
        )


def no_sleep(seconds: float) -> None:
    pass


def test_invitations_arrive_with_their_headers_and_envelope(launched, smtp):
    settings = Settings.from_env(
        {"BOUNCE_DOMAIN": "bounces.union.example", "CAMPAIGN_SECRET": SETTINGS.secret},
        templates_dir=SETTINGS.templates_dir,
    )
    result = send_outbox(launched, settings, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    assert (result.sent, result.failed) == (40, 0)
    received = smtp.recorder.received
    assert len(received) == 40
    first = received[0]
    with launched.connect() as conn:
        message_id, reference = conn.execute(
            select(outbox_table.c.message_id, letter_table.c.reference)
            .join(letter_table, letter_table.c.id == outbox_table.c.letter_id)
            .order_by(outbox_table.c.id)
        ).first()
        states = dict(
            conn.execute(select(letter_table.c.state, func.count()).group_by(letter_table.c.state)).all()
        )
    # The VERP address names this very message, random part and all: a bounce to it proves itself.
    assert first.mail_from == f"bounces+{verp_tag(message_id)}@bounces.union.example"
    assert re.fullmatch(rf"<{reference}\.invitation\.[0-9a-f]{{16}}@union\.example>", message_id)
    assert first.rcpt_tos == ["aisha.khan@members.example.org"]
    message = first.message
    assert message["Message-ID"] == message_id
    assert message["From"] == "Campaigns Team <campaigns@union.example>"
    assert message["Reply-To"] == "organising@union.example"
    assert message["Date"] is not None
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert statuses(launched) == {"sent": 40}
    assert states == {"invited": 40}


def test_temporary_failure_is_retried_later_and_permanent_one_fails(launched, smtp):
    smtp.recorder.refuse["aisha.khan@members.example.org"] = "451 4.3.0 Mailbox busy, try later"
    smtp.recorder.refuse["ben.ashworth@members.example.org"] = "550 5.1.1 No such user here"
    result = send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    assert (result.sent, result.retrying, result.failed) == (38, 1, 1)
    with launched.connect() as conn:
        rows = {r.to_addr: r for r in conn.execute(select(outbox_table))}
    busy = rows["Aisha Khan <aisha.khan@members.example.org>"]
    assert (busy.status, busy.attempts) == ("queued", 1)
    assert busy.error == "451 4.3.0 Mailbox busy, try later"
    assert busy.next_attempt_at is not None
    gone = rows["Ben Ashworth <ben.ashworth@members.example.org>"]
    assert (gone.status, gone.error) == ("failed", "550 5.1.1 No such user here")
    # Not due yet: a second run leaves it alone.
    assert send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep).sent == 0


def test_a_run_of_failures_pauses_sending_until_resumed(launched, smtp):
    smtp.recorder.refuse_all = "421 4.7.0 Too many connections, go away"
    result = send_outbox(
        launched, SETTINGS, SmtpTransport(smtp.url), rate=1000, pause_after=5, sleep=no_sleep
    )
    assert result.paused.startswith("5 failures in a row, the last: 421 4.7.0 Too many connections")
    assert result.retrying == 5
    assert statuses(launched) == {"queued": 40}  # untouched messages went back to the queue
    with pytest.raises(CampaignError, match="sending is paused since .*run `campaign send --resume`"):
        send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    assert pause_state(launched)[1] == result.paused


def test_no_smtp_url_writes_eml_files(launched, tmp_path):
    result = send_outbox(launched, SETTINGS, FolderTransport(tmp_path / "outbox"), rate=1000, sleep=no_sleep)
    assert result.sent == 40
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 40


def test_cli_send_once(cli, launched, smtp):
    result = cli("send", "--once", "--rate", "1000", env={"SMTP_URL": smtp.url})
    assert result.exit_code == 0, result.output
    assert "40 sent, 0 to retry later, 0 failed." in result.stdout
    assert len(smtp.recorder.received) == 40


def test_killed_worker_loses_nothing_and_sends_nothing_twice(smtp, tmp_path):
    """kill -9 a worker mid-batch; the restarted one finishes, resending at most the uncertain one.

    A subprocess against a SQLite file: killing is about the worker, and
    PostgreSQL's claiming is covered by the tests above, which run on both.
    """
    db_url = f"sqlite:///{tmp_path}/kill.db"
    launched = open_engine(db_url)
    init_db(launched)
    load_sample(launched, tmp_path)
    create_wave(launched, "MPs", MP_WAVE, SETTINGS)
    launch_wave(launched, "MPs", SETTINGS)
    smtp.recorder.delay = 0.05
    env = {**os.environ, "SMTP_URL": smtp.url, "CAMPAIGN_DB": db_url, "CAMPAIGN_SECRET": SETTINGS.secret}
    worker = subprocess.Popen(
        [sys.executable, "-m", "engine", "send", "--rate", "1000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(smtp.recorder.received) < 10 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.01)
    assert worker.poll() is None, worker.stderr.read().decode()
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker.stderr.close()
    before = len(smtp.recorder.received)
    assert 10 <= before < 40
    smtp.recorder.delay = 0
    recovery = recover_abandoned(launched)
    assert recovery.uncertain <= 1
    send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    ids = [r.message["Message-ID"] for r in smtp.recorder.received]
    assert len(ids) == len(set(ids)), "no message arrived twice"
    final = statuses(launched)
    assert final.get("sent", 0) + final.get("uncertain", 0) == 40
    assert len(set(ids)) >= 40 - final.get("uncertain", 0)
    if final.get("uncertain"):
        assert resend_uncertain(launched) == 1
        assert send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep).sent == 1
    assert statuses(launched) == {"sent": 40}
    launched.dispose()


def test_two_workers_at_once_never_send_a_message_twice(launched, tmp_path):
    """Claims are exclusive: FOR UPDATE SKIP LOCKED on PostgreSQL, the write lock on SQLite."""
    import threading

    results = {}

    def work(name: str) -> None:
        results[name] = send_outbox(
            launched, SETTINGS, FolderTransport(tmp_path / name), rate=1000, batch=3, sleep=no_sleep
        )

    workers = [threading.Thread(target=work, args=(name,)) for name in ("one", "two")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert results["one"].sent + results["two"].sent == 40
    files = [p.name for name in ("one", "two") for p in (tmp_path / name).glob("*.eml")]
    assert len(files) == len(set(files)) == 40
    assert statuses(launched) == {"sent": 40}


def test_the_smtp_transaction_stuffs_dots_reports_partial_refusals_and_the_final_reply(smtp):
    transport = SmtpTransport(smtp.url)
    data = (
        b"From: campaigns@union.example\r\nTo: a@members.example.org\r\nSubject: dots\r\n\r\n"
        b".a line that starts with a dot\r\n..and one with two\r\n.\r\nend"
    )
    delivered = transport.send(data, "campaigns@union.example", ["a@members.example.org"], "dots")
    assert delivered.response == "250 2.0.0 queued as test"
    body = smtp.recorder.received[-1].message.get_content()
    assert body.splitlines() == [".a line that starts with a dot", "..and one with two", ".", "end"]
    # One of two recipients refused: the message goes to the other, and the refusal is an error.
    smtp.recorder.refuse["b@members.example.org"] = "550 5.1.1 no such user"
    with pytest.raises(Exception, match="550") as refused:
        transport.send(
            data, "campaigns@union.example", ["a@members.example.org", "b@members.example.org"], "x"
        )
    assert refused.value.temporary is False
    assert smtp.recorder.received[-1].rcpt_tos == ["a@members.example.org"]
    # An address outside ASCII goes the standard library's way, with SMTPUTF8.
    transport.send(data, "campaigns@union.example", ["siân@members.example.org"], "utf8")
    assert smtp.recorder.received[-1].rcpt_tos == ["siân@members.example.org"]
    transport.close()


BAD_NAME = "Aisha\r\nBcc: everyone@example.org"
CANNOT_BUILD = "cannot build the message: To: a header cannot hold a line break (U+000D)"


def poison(engine, *members: str) -> None:
    """Give members a name with CR/LF, as a database filled by an older version may hold."""
    with engine.begin() as conn:
        conn.execute(
            member_table.update().where(member_table.c.membership_no.in_(members)).values(first_name=BAD_NAME)
        )


@pytest.fixture
def poisoned(sample):  # noqa: F811
    """The first member's invitation, the oldest message in the queue, cannot be built."""
    poison(sample, "M100001")
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    return sample


def outbox_row(engine, address: str):
    with engine.connect() as conn:
        return conn.execute(select(outbox_table).where(outbox_table.c.to_addr.contains(f"<{address}>"))).one()


def test_a_message_that_cannot_be_built_is_set_aside_and_the_rest_are_sent(poisoned, smtp):
    result = send_outbox(poisoned, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    bad = outbox_row(poisoned, "aisha.khan@members.example.org")
    assert (result.sent, result.retrying, result.failed) == (39, 0, 1)
    assert result.errors == [f"message {bad.id}: {CANNOT_BUILD}"]
    assert (bad.status, bad.error, bad.attempts) == ("failed", CANNOT_BUILD, 0)
    assert statuses(poisoned) == {"sent": 39, "failed": 1}
    received = smtp.recorder.received
    assert len(received) == 39
    assert all(r.message["Bcc"] is None for r in received)
    assert "aisha.khan@members.example.org" not in {a for r in received for a in r.rcpt_tos}
    # The next run has nothing left to die on.
    again = send_outbox(poisoned, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    assert (again.sent, again.failed) == (0, 0)


def test_unbuildable_messages_never_pause_sending(sample, smtp):  # noqa: F811
    poison(sample, "M100001", "M100002", "M100003")
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    result = send_outbox(sample, SETTINGS, SmtpTransport(smtp.url), rate=1000, pause_after=2, sleep=no_sleep)
    assert (result.sent, result.failed, result.paused) == (37, 3, None)
    assert len(smtp.recorder.received) == 37


def test_cli_send_reports_the_message_set_aside_in_one_line(cli, poisoned, smtp):
    result = cli("send", "--once", "--rate", "1000", env={"SMTP_URL": smtp.url})
    assert result.exit_code == 0, result.output
    bad = outbox_row(poisoned, "aisha.khan@members.example.org")
    assert "39 sent, 0 to retry later, 1 failed." in result.stdout
    assert f"  message {bad.id}: {CANNOT_BUILD}\n" in result.stderr
    assert "Traceback" not in result.output and "everyone@example.org" not in result.output
    assert len(smtp.recorder.received) == 39


def test_outbox_export_sets_aside_what_it_cannot_build_and_writes_the_rest(cli, poisoned, smtp, tmp_path):
    out = tmp_path / "check"
    result = cli("outbox", "export", str(out))
    assert result.exit_code == 0, result.output
    bad = outbox_row(poisoned, "aisha.khan@members.example.org")
    assert result.stdout == f"Wrote 39 message(s) to {out}/ (nothing was sent).\n"
    assert result.stderr == (
        f"1 message(s) could not be built and were set aside as failed:\n  message {bad.id}: {CANNOT_BUILD}\n"
    )
    assert len(list(out.glob("*.eml"))) == 39
    assert (bad.status, bad.error) == ("failed", CANNOT_BUILD)
    # What export set aside, the worker leaves alone; the rest go.
    assert send_outbox(poisoned, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep).sent == 39
    assert statuses(poisoned) == {"sent": 39, "failed": 1}


def test_a_sender_setting_no_header_can_hold_stops_before_anything_is_claimed(launched, smtp, tmp_path):
    """Otherwise every message would be set aside as failed, one by one, for the same reason."""
    settings = Settings.from_env(
        {
            "CAMPAIGN_FROM": "Campaigns\r\nBcc: everyone@example.org <c@union.example>",
            "CAMPAIGN_SECRET": SETTINGS.secret,
        },
        templates_dir=SETTINGS.templates_dir,
    )
    error = "CAMPAIGN_FROM: contains a line break (U+000D): no mail can carry it; nothing was sent"
    with pytest.raises(CampaignError) as refused:
        send_outbox(launched, settings, SmtpTransport(smtp.url), rate=1000, sleep=no_sleep)
    assert str(refused.value) == error
    with pytest.raises(CampaignError) as refused:
        export_outbox(launched, tmp_path / "check", settings)
    assert str(refused.value) == error
    assert statuses(launched) == {"queued": 40}
    assert smtp.recorder.received == []


ASKS = "It asks your MP to press ministers for a fairer, safer inspection system."


def test_invitations_say_what_the_letter_asks_in_the_waves_own_sentence_not_its_subject(sample, smtp):  # noqa: F811
    from engine.letters.waves import WaveSpec
    from engine.store.models import wave_table

    mps = WaveSpec(target="mp", letter="mp-inspection", invite="invitation", asks=f"  {ASKS}  ")
    employers = WaveSpec(target="employer", letter="employer-wellbeing", invite="invitation")
    create_wave(sample, "MPs", mps, SETTINGS)
    create_wave(sample, "Employers", employers, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    send_outbox(sample, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    with sample.connect() as conn:
        wave_of = dict(
            conn.execute(
                select(outbox_table.c.message_id, wave_table.c.name)
                .join(letter_table, letter_table.c.id == outbox_table.c.letter_id)
                .join(wave_table, wave_table.c.id == letter_table.c.wave_id)
            ).all()
        )
        subjects = set(conn.execute(select(letter_table.c.subject)).scalars())
    checked = {"MPs": 0, "Employers": 0}
    for received in smtp.recorder.received:
        message = received.message
        wave = wave_of[message["Message-ID"]]
        target = message["Subject"].removeprefix("Your letter to ").removesuffix(" is ready to check")
        if wave == "MPs":
            asks = ASKS
        else:  # no --asks: the invitation's own words
            asks = f"It asks {target} to act on the concerns it sets out, and to reply to you."
        text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
        html = message.get_body(("html",)).get_content()
        assert f"\n\n{asks}\n\n" in text
        assert '<p class="asks"' in html and asks.replace("'", "&#39;") in html
        # The letter's subject is a heading for its recipient, not a sentence for the member.
        assert "The letter asks" not in text
        assert not any(subject in text or subject in html for subject in subjects)
        checked[wave] += 1
    assert checked["MPs"] == 40 and checked["Employers"] > 30


def test_a_sent_letter_gives_its_member_one_message_their_receipt_with_the_letter_exactly_as_sent(
    launched, smtp
):
    from engine.letters.confirm import letter_for_member, send_for_me

    send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)  # the invitations
    smtp.recorder.received.clear()
    found = letter_for_member(launched, "MPs", "M100003")
    member = found.member
    edited = (
        # The template's prompt stays untouched, so it is left out (issue 12, item 1).
        found.text.replace(
            "[Why this matters", "Our head was signed off sick for a term.\n\n[Why this matters"
        )
        + "\nP.S. é"
    )
    assert send_for_me(launched, SETTINGS, found, edited, "1 Orchard Way\nSevenoaks\nBR8 7RE")
    result = send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    assert (result.sent, result.failed) == (2, 0)
    letter, receipt = smtp.recorder.received
    reference = found.letter["reference"]
    # The letter goes to its target alone: no copy to the member on it.
    assert letter.rcpt_tos == [found.letter["target_email"]]
    assert letter.message["Cc"] is None
    assert letter.message["Reply-To"] == f"{member['name']} <{member['email']}>"
    # The member gets one message about it: the receipt.
    to_member = [r for r in smtp.recorder.received if member["email"] in r.rcpt_tos]
    assert to_member == [receipt]
    assert ".receipt." in receipt.message["Message-ID"]
    sent_text = letter.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Our head was signed off sick for a term." in sent_text and "[Why" not in sent_text
    text = receipt.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert sent_text in text  # every word, the signature and footer too, exactly as it went
    with launched.connect() as conn:
        sent_at = conn.execute(
            select(letter_table.c.sent_at).where(letter_table.c.id == found.letter["id"])
        ).scalar_one()
    on = f"{sent_at.day} {sent_at:%B %Y}"
    assert f"Subject:   {letter.message['Subject']}\n" in text
    assert f"Date:      {on}\n" in text and f"Reference: {reference}\n" in text
    assert f"was sent to {found.letter['target_name']} on {on}" in text
    assert "Replies come to you" in " ".join(text.split())
    assert f"please forward it to organising@union.example, keeping the reference {reference}" in " ".join(
        text.split()
    )
    html = receipt.message.get_body(("html",)).get_content()
    assert "Our head was signed off sick for a term." in html and "P.S. é" in html


def test_a_wave_whose_receipt_does_not_carry_the_letter_copies_it_to_the_member_and_sends_no_receipt(
    launched, smtp
):
    from engine.letters.confirm import letter_for_member, send_for_me
    from engine.store.models import wave_table

    # As a wave launched before receipts carried the letter has it frozen.
    with launched.begin() as conn:
        frozen = conn.execute(select(wave_table.c.frozen).where(wave_table.c.name == "MPs")).scalar_one()
        assert frozen.pop("receipt_carries_letter") is True
        conn.execute(wave_table.update().where(wave_table.c.name == "MPs").values(frozen=frozen))
    send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    smtp.recorder.received.clear()
    found = letter_for_member(launched, "MPs", "M100003")
    assert send_for_me(launched, SETTINGS, found, found.text, "1 Orchard Way\nSevenoaks")
    result = send_outbox(launched, SETTINGS, SmtpTransport(smtp.url), rate=0, sleep=no_sleep)
    assert (result.sent, result.failed) == (1, 0)
    (letter,) = smtp.recorder.received
    member = found.member
    # Its member's one message about it is the letter itself, copied to them: their words are not lost.
    assert letter.message["Cc"] == f"{member['name']} <{member['email']}>"
    assert sorted(letter.rcpt_tos) == sorted([member["email"], found.letter["target_email"]])
    with launched.connect() as conn:
        kinds = conn.execute(
            select(outbox_table.c.kind).where(outbox_table.c.letter_id == found.letter["id"])
        ).scalars()
        assert sorted(kinds) == ["invitation", "letter"]
