"""Mail from outside that tries to speak for others: forged complaints, forwards, bounces, spoofed senders.

Anyone can write to organising@, and every MP and employer sees a letter's
reference. Each message here goes through `campaign replies ingest` as a
real .eml file against a sent wave, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import timedelta

import pytest
from click.testing import CliRunner
from conftest import ROOT
from sqlalchemy import select
from test_replies import MAIL, WAVE, sent, state_of, stored  # noqa: F401  (the sent-wave fixture)
from test_waves import SETTINGS, sample  # noqa: F401

from engine.cli import main
from engine.inbox.staff import accept_suggestion
from engine.letters.confirm import letter_for_member, send_for_me
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.store.models import (
    failure_table,
    inbound_table,
    letter_table,
    member_table,
    suppression_table,
    utcnow,
)
from engine.store.suppression import SUPPRESSED_RECIPIENT

ENV = {"CAMPAIGN_TEMPLATES": str(ROOT / "templates"), "CAMPAIGN_SECRET": SETTINGS.secret}


class Mailroom:
    """`campaign replies …` run on a folder of hostile messages aimed at the sent wave's letters."""

    def __init__(self, db_url, engine, letters, tmp_path):
        self.db_url, self.engine, self.letters, self.folder = db_url, engine, letters, tmp_path / "mail"
        self.folder.mkdir()
        self.runner = CliRunner()

    def drop(self, name: str, letter: str, **extra: str) -> None:
        data = fill_with(name, self.letters[letter], extra)
        (self.folder / f"{name}.eml").write_bytes(data)

    def run(self, *args: str):
        return self.runner.invoke(main, ["--db", self.db_url, *args], env=ENV)

    def ingest(self):
        result = self.run("replies", "ingest", "--eml", str(self.folder))
        assert result.exit_code == 0, result.output
        return result

    def waiting(self) -> dict[str, dict]:
        """What waits for staff, by the message's own Message-ID."""
        listed = self.run("replies", "list", "--unmatched", "--json")
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.output)
        with self.engine.connect() as conn:
            ids = dict(conn.execute(select(inbound_table.c.id, inbound_table.c.message_id)).all())
        return {ids[row["id"]]: row for row in rows}


def fill_with(name: str, letter: dict, extra: dict[str, str]) -> bytes:
    data = (MAIL / f"{name}.eml").read_bytes()
    for key, value in {**letter["placeholders"], **extra}.items():
        data = data.replace(b"{{" + key.encode() + b"}}", value.encode())
    assert b"{{" not in data, name
    return data


@pytest.fixture
def mailroom(sent, db_url, tmp_path):  # noqa: F811
    engine, letters = sent
    return Mailroom(db_url, engine, letters, tmp_path)


def suppressed(engine) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(select(suppression_table.c.address)).scalars().all()


def opted_out(engine, letter: dict) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                select(member_table.c.mail_opt_out_at).where(member_table.c.id == letter["member_id"])
            ).scalar_one()
            is not None
        )


def test_forged_complaints_suppress_nobody_and_a_later_letter_to_that_target_still_goes(mailroom, tmp_path):
    engine, letters = mailroom.engine, mailroom.letters
    victim, other = letters["spare1"], letters["spare2"]
    # A member who has not written yet: the forgeries name the employer they will write to.
    with engine.connect() as conn:
        unsent = conn.execute(
            select(member_table.c.membership_no)
            .join(letter_table, letter_table.c.member_id == member_table.c.id)
            .where(letter_table.c.state == "invited", letter_table.c.target_email.is_not(None))
            .limit(1)
        ).scalar_one()
    found = letter_for_member(engine, WAVE, unsent)
    target = found.letter["target_email"]
    mailroom.drop("hostile-complaint-apple", "spare1", TARGET=target)
    mailroom.drop(
        "hostile-complaint-arf",
        "spare1",
        TARGET=target,
        OTHER_TARGET=other["target_email"],
        OTHER_MEMBER=other["email"],
    )
    result = mailroom.ingest()
    assert "2 stored (2 complaint)" in result.output
    assert "0 addresses suppressed" in result.output
    assert "2 set aside for staff" in result.output
    assert suppressed(engine) == []
    assert not opted_out(engine, victim) and not opted_out(engine, other)
    waiting = mailroom.waiting()
    for message_id in ("<apple-unsub-0031@outside.example>", "<arf-forged-0032@outside.example>"):
        assert waiting[message_id]["triage"].startswith("a complaint that quotes no message of ours"), (
            message_id
        )
    # The guessed Message-ID <REF.letter@…> is only a suggestion: it names the letter, proves nothing.
    assert waiting["<arf-forged-0032@outside.example>"]["suggested_reference"] == victim["reference"]

    # That member now sends their letter to the employer the forgeries named: it goes.
    assert send_for_me(engine, SETTINGS, found, found.text, None)
    outcome = send_outbox(
        engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None
    )
    assert outcome.failed == 0
    assert state_of(engine, found.letter["id"]) == "sent"


def test_a_complaint_about_a_letter_waits_for_staff_before_its_recipient_is_suppressed(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    letter = letters["spare1"]
    mailroom.drop("hostile-complaint-letter", "spare1")
    mailroom.ingest()
    assert suppressed(engine) == []
    row = mailroom.waiting()["<arf-letter-0033@feedback.mailbox.example>"]
    assert row["triage"].startswith("a complaint about a member's letter to its recipient")
    assert row["suggested_reference"] == letter["reference"]
    accepted = mailroom.run("replies", "accept", str(row["id"]))
    assert accepted.exit_code == 0, accepted.output
    # The letter's recipient, not the member who had a copy.
    assert suppressed(engine) == [letter["target_email"].lower()]
    assert f"suppressed: {letter['target_email'].lower()}" in accepted.output
    assert not opted_out(engine, letter)
    assert "<arf-letter-0033@feedback.mailbox.example>" not in mailroom.waiting()


def test_a_complaint_about_our_invitation_suppresses_its_recipient_only(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    letter = letters["spare2"]
    mailroom.drop("complaint-arf", "spare2")  # it also names the letter's target as a removal recipient
    result = mailroom.ingest()
    assert "1 addresses suppressed" in result.output
    assert suppressed(engine) == [letter["email"].lower()]
    assert opted_out(engine, letter)


def test_forged_forwards_and_spoofed_targets_record_no_reply_and_draft_nothing(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    # A letter whose employer has no other letter awaiting a reply: its address alone would pick it.
    awaiting = Counter(letter["target_email"] for letter in letters.values())
    alone = next(
        name for name, letter in letters.items() if awaiting[letter["target_email"]] == 1 and name != "spare1"
    )
    mailroom.drop("hostile-forward", "spare1")
    mailroom.drop("hostile-spoofed-target", alone)
    result = mailroom.ingest()
    assert "0 letters replied" in result.output and "0 follow-ups drafted" in result.output
    waiting = mailroom.waiting()
    forward = waiting["<forged-forward-0034@outside.example>"]
    assert forward["triage"].startswith("forwarded by someone other than the member who wrote the letter")
    assert forward["suggested_reference"] == letters["spare1"]["reference"]
    spoofed = waiting["<spoofed-target-0035@outside.example>"]
    assert spoofed["triage"].startswith("claims to answer a letter without answering a message of ours")
    assert spoofed["suggested_reference"] == letters[alone]["reference"]
    for name in ("spare1", alone):
        assert state_of(engine, letters[name]["id"]) == "sent"
    with engine.connect() as conn:
        follow_ups = conn.execute(select(letter_table.c.id).where(letter_table.c.kind == "follow_up")).all()
    assert follow_ups == []
    # The real member forwarding their employer's reply is believed (one that answers: a holding
    # reply would draft nothing either way).
    mailroom.folder.joinpath("hostile-forward.eml").unlink()
    mailroom.folder.joinpath("hostile-spoofed-target.eml").unlink()
    mailroom.drop("fwd-new-outlook-html", "spare1")
    result = mailroom.ingest()
    assert "1 letters replied" in result.output and "1 follow-ups drafted" in result.output


def test_a_forged_bounce_marks_nothing_until_staff_accept_it(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    letter = letters["spare1"]
    mailroom.drop("hostile-bounce", "spare1")
    result = mailroom.ingest()
    assert "0 bounced" in result.output
    assert state_of(engine, letter["id"]) == "sent"
    row = mailroom.waiting()["<forged-bounce-0036@outside.example>"]
    assert row["triage"].startswith("a bounce that quotes no message of ours")
    assert row["suggested_reference"] == letter["reference"]
    with engine.connect() as conn:
        failure = conn.execute(select(failure_table).where(failure_table.c.inbound_id == row["id"])).one()
    assert (failure.address, failure.status) == (letter["target_email"].lower(), "5.1.1")
    accepted = mailroom.run("replies", "accept", str(row["id"]), "--json")
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.output)["bounced"] == 1
    assert state_of(engine, letter["id"]) == "bounced"


def test_a_real_bounce_quoting_our_message_is_acted_on_at_once(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    mailroom.drop("bounce-verp", "spare1")
    result = mailroom.ingest()
    assert "1 bounced" in result.output
    assert state_of(engine, letters["spare1"]["id"]) == "bounced"
    assert mailroom.waiting() == {}


def test_a_failed_dmarc_never_matches_automatically_and_shows_in_triage(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    letter = letters["spare1"]
    mailroom.drop("hostile-dmarc-fail", "spare1")
    mailroom.ingest()
    assert state_of(engine, letter["id"]) == "sent"
    row = mailroom.waiting()["<dmarc-fail-0037@outside.example>"]
    assert row["triage"] == (
        "the sender's domain failed DMARC (mx.union.example: spf=fail dkim=none dmarc=fail)"
    )
    assert row["suggested_reference"] == letter["reference"]
    shown = mailroom.run("replies", "show", str(row["id"]))
    assert "sender checks: mx.union.example: spf=fail dkim=none dmarc=fail" in shown.output
    assert f"seems to be {letter['reference']}" in shown.output


def test_only_our_own_servers_verdicts_are_read_when_its_authserv_id_is_set(sent, tmp_path):  # noqa: F811
    from engine.inbox.ingest import Ingester

    engine, letters = sent
    letter = letters["spare1"]
    settings = dataclasses.replace(SETTINGS, authserv_id="mx.elsewhere.example")
    # mx.union.example is not our receiving server here: its header could have been written by anyone.
    inbound_id = Ingester(engine, settings).record(fill_with("hostile-dmarc-fail", letter, {}), "eml")
    row = stored(engine, inbound_id)
    assert (row["triage"], row["letter_id"], row["authentication"]) == (None, letter["id"], None)
    assert state_of(engine, letter["id"]) == "replied"


def test_a_nul_byte_is_stored_without_stopping_the_run(mailroom):
    engine, letters = mailroom.engine, mailroom.letters
    mailroom.drop("hostile-nul", "spare1")
    mailroom.drop("fwd-gmail-en", "spare2")
    result = mailroom.ingest()
    assert "2 stored (2 reply)" in result.output
    with engine.connect() as conn:
        rows = {
            r.message_id: r
            for r in conn.execute(
                select(
                    inbound_table.c.message_id,
                    inbound_table.c.raw,
                    inbound_table.c.subject,
                    inbound_table.c.text,
                    inbound_table.c.letter_id,
                )
            )
        }
    nul = rows["<nul-0038@members.example.org>"]
    assert nul.raw == fill_with("hostile-nul", letters["spare1"], {})  # the bytes exactly as received
    assert "\0" not in nul.subject and nul.subject.startswith("Fwd: their reply [Ref:")
    assert "\0" not in nul.text and "Thank you for your letter" in nul.text
    assert nul.letter_id == letters["spare1"]["id"]
    assert rows["<CAGmailFwdEn0001@mail.gmail.example>"].letter_id == letters["spare2"]["id"]


def test_a_message_that_cannot_be_stored_is_left_in_the_source_and_the_rest_go_on(mailroom, monkeypatch):
    import engine.inbox.ingest as replies

    real = replies.without_nul

    def refuse(row):
        if "their reply" in (row.get("subject") or ""):
            raise RuntimeError("disk full")
        return real(row)

    monkeypatch.setattr(replies, "without_nul", refuse)
    mailroom.drop("hostile-nul", "spare1")
    mailroom.drop("fwd-new-outlook-html", "spare2")  # a reply that answers its letter
    result = mailroom.run("replies", "ingest", "--eml", str(mailroom.folder))
    assert result.exit_code == 2
    assert "hostile-nul.eml: not stored: RuntimeError: disk full" in result.output
    assert "1 message(s) could not be stored and stay in the source; the other 1 were" in result.output
    assert state_of(mailroom.engine, mailroom.letters["spare2"]["id"]) == "replied"
    monkeypatch.setattr(replies, "without_nul", real)
    again = mailroom.ingest()
    assert "1 stored (1 reply); 1 already stored." in again.output


def test_accept_and_dismiss_say_what_they_cannot_do(mailroom):
    mailroom.drop("fwd-gmail-en", "spare1")
    mailroom.ingest()
    with mailroom.engine.connect() as conn:
        reply_id = conn.execute(select(inbound_table.c.id)).scalar_one()
    for verb in ("accept", "dismiss"):
        result = mailroom.run("replies", verb, str(reply_id))
        assert result.exit_code == 2
        assert f"message {reply_id} is not waiting for staff: nothing to {verb}" in result.output
    with pytest.raises(Exception, match="no message 999"):
        accept_suggestion(mailroom.engine, SETTINGS, 999)


def test_a_complaint_quoting_our_unsubscribe_link_suppresses_that_member_a_forged_link_nobody(mailroom):
    from engine.letters.links import unsubscribe_link

    engine, letters = mailroom.engine, mailroom.letters
    member, other = letters["spare1"], letters["spare2"]
    real = unsubscribe_link(SETTINGS.base_url, SETTINGS.secret, member["reference"], member["link_nonce"])
    mailroom.drop("complaint-unsubscribe-link", "spare1", UNSUBSCRIBE=real)
    mailroom.ingest()
    assert suppressed(engine) == [member["email"].lower()]
    # The other member's reference with a made-up token: it proves nothing.
    (mailroom.folder / "complaint-unsubscribe-link.eml").unlink()
    forged = f"{SETTINGS.base_url}/unsubscribe/{other['reference']}/{'A' * 22}"
    data = fill_with("complaint-unsubscribe-link", other, {"UNSUBSCRIBE": forged})
    (mailroom.folder / "forged.eml").write_bytes(data.replace(b"arf-unsub-0039", b"arf-unsub-0040"))
    mailroom.ingest()
    assert suppressed(engine) == [member["email"].lower()]
    assert mailroom.waiting()["<arf-unsub-0040@feedback.mailbox.example>"]["triage"].startswith(
        "a complaint that quotes no message of ours"
    )


def sent_and_waiting(engine, letters: dict) -> tuple[str, dict]:
    """A sent letter's name, and a letter to the same recipient that its member has not sent yet."""
    with engine.connect() as conn:
        waiting = {
            row.target_email: dict(row._mapping)
            for row in conn.execute(
                select(letter_table).where(
                    letter_table.c.state == "invited", letter_table.c.target_email.is_not(None)
                )
            )
        }
    name = next(n for n, letter in letters.items() if letter["target_email"] in waiting)
    return name, waiting[letters[name]["target_email"]]


def test_a_letter_to_a_suppressed_recipient_is_reported_never_left_queued(mailroom, tmp_path):
    from test_web import Site

    from engine.letters.links import link_token
    from engine.letters.waves import wave_status

    engine, letters = mailroom.engine, mailroom.letters
    name, other = sent_and_waiting(engine, letters)
    member = letter_for_member(engine, WAVE, member_number(engine, other))
    assert send_for_me(engine, SETTINGS, member, member.text, None)  # queued, not yet sent
    mailroom.drop("hostile-complaint-letter", name)
    mailroom.ingest()
    reply_id = mailroom.waiting()["<arf-letter-0033@feedback.mailbox.example>"]["id"]
    assert mailroom.run("replies", "accept", str(reply_id)).exit_code == 0
    # The queued letter cannot go: it says so at once, in wave status and on the member's page.
    assert state_of(engine, other["id"]) == "failed"
    status = wave_status(engine, WAVE)
    assert {
        "state": "failed",
        "unreachable": "target",
        "meaning": "could not be sent to its target (refused, suppressed or unbuildable)",
        "reason": SUPPRESSED_RECIPIENT,
        "letters": 1,
    } in status["undelivered"]
    shown = mailroom.run("wave", "status", WAVE)
    assert f"  1 failed (could not be sent to the target): {SUPPRESSED_RECIPIENT}" in shown.output
    outcome = send_outbox(
        engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None
    )
    assert outcome.sent == 0
    import requests

    with Site(engine) as site:
        page = requests.get(f"{site.base}/l/{link_token(SETTINGS.secret, other['link_nonce'])}", timeout=10)
    assert f"We could not send your letter to {other['target_name']}: {SUPPRESSED_RECIPIENT}." in page.text


def test_a_member_cannot_ask_us_to_send_to_a_suppressed_recipient_but_can_send_it_themselves(mailroom):
    from test_web import Site

    from engine.errors import CampaignError
    from engine.letters.links import link_token
    from engine.store.suppression import suppress_address

    engine, letters = mailroom.engine, mailroom.letters
    _, other = sent_and_waiting(engine, letters)
    with engine.begin() as conn:
        suppress_address(conn, other["target_email"], "complaint (staff)", None, utcnow())
    found = letter_for_member(engine, WAVE, member_number(engine, other))
    assert not found.can_send_for_member
    with pytest.raises(CampaignError, match="has asked not to receive email sent through the campaign"):
        send_for_me(engine, SETTINGS, found, found.text, None)
    import requests

    with Site(engine) as site:
        page = requests.get(f"{site.base}/l/{link_token(SETTINGS.secret, other['link_nonce'])}", timeout=10)
    assert "so we cannot send this letter for you" in page.text
    assert "Send it for me" not in page.text and "I've sent it myself" in page.text
    assert state_of(engine, other["id"]) == "invited"


def member_number(engine, letter: dict) -> str:
    with engine.connect() as conn:
        return conn.execute(
            select(member_table.c.membership_no).where(member_table.c.id == letter["member_id"])
        ).scalar_one()


def test_the_sender_fails_a_letter_whose_recipient_was_suppressed_while_it_waited(mailroom, tmp_path):
    engine, letters = mailroom.engine, mailroom.letters
    _, other = sent_and_waiting(engine, letters)
    found = letter_for_member(engine, WAVE, member_number(engine, other))
    assert send_for_me(engine, SETTINGS, found, found.text, None)
    # Another process records the suppression between the member's click and the sender's run.
    with engine.begin() as conn:
        conn.execute(
            suppression_table.insert().values(
                address=other["target_email"].lower(), reason="complaint (staff)", created_at=utcnow()
            )
        )
    outcome = send_outbox(
        engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None
    )
    assert outcome.sent == 0
    with engine.connect() as conn:
        row = conn.execute(
            select(letter_table.c.state, letter_table.c.bounce_reason).where(letter_table.c.id == other["id"])
        ).one()
    assert tuple(row) == ("failed", SUPPRESSED_RECIPIENT)


def test_replies_show_says_what_a_bounce_says_and_log_takes_uk_dates(mailroom):
    letters = mailroom.letters
    mailroom.drop("bounce-verp", "spare1")
    mailroom.ingest()
    listed = json.loads(mailroom.run("replies", "list", "--kind", "bounce", "--json").output)
    shown = mailroom.run("replies", "show", str(listed[0]["id"]))
    target = letters["spare1"]["target_email"].lower()
    assert f"  failed: {target} (5.1.1)" in shown.output
    assert f"    server said: 550 5.1.1 <{target}>: Recipient address rejected: User unknown" in shown.output
    reference = letters["spare2"]["reference"]
    for given in ("28/11/2026", "28.11.26", "2026-11-28"):
        logged = mailroom.run("replies", "log", reference, "--received", given, "--note", given)
        assert logged.exit_code == 0, logged.output
    with mailroom.engine.connect() as conn:
        dates = {
            row.note: row.received_at.date().isoformat()
            for row in conn.execute(
                select(inbound_table.c.note, inbound_table.c.received_at).where(
                    inbound_table.c.source == "paper"
                )
            )
        }
    assert dates == {"28/11/2026": "2026-11-28", "28.11.26": "2026-11-28", "2026-11-28": "2026-11-28"}
    wrong = mailroom.run("replies", "log", reference, "--received", "11/28/2026")
    assert wrong.exit_code == 2
    assert "'11/28/2026' is not a date like 28/11/2026 (day first) or 2026-11-28" in wrong.output


def test_a_members_invitation_bouncing_is_told_apart_from_their_letter_bouncing_at_its_target(mailroom):
    import requests
    from test_web import Site

    from engine.followup.chase import chase
    from engine.letters.links import link_token
    from engine.store.models import outbox_table

    engine, letters = mailroom.engine, mailroom.letters
    lt, m, o = letter_table.c, member_table.c, outbox_table.c
    # A member who has not decided yet: their invitation went, and comes back.
    with engine.connect() as conn:
        member = conn.execute(
            select(lt.id, lt.reference, lt.link_nonce, m.email, m.first_name, m.last_name, o.message_id)
            .join(member_table, m.id == lt.member_id)
            .join(outbox_table, (o.letter_id == lt.id) & (o.kind == "invitation"))
            .where(lt.state == "invited")
            .order_by(lt.id)
            .limit(1)
        ).one()
    target = letters["spare2"]
    mailroom.drop(
        "bounce-invitation",
        "spare1",
        MEMBER=member.email,
        MEMBER_NAME=f"{member.first_name} {member.last_name}",
        INVITE_MSGID=member.message_id,
    )
    mailroom.drop("bounce-verp", "spare2")
    result = mailroom.ingest()
    assert "1 bounced, 1 unreachable (the member's invitation bounced)," in result.output
    assert state_of(engine, member.id) == "unreachable"
    assert state_of(engine, target["id"]) == "bounced"

    def listed(state: str) -> list[str]:
        done = mailroom.run("letters", "list", "--wave", WAVE, "--state", state, "--json")
        assert done.exit_code == 0, done.output
        return [row["reference"] for row in json.loads(done.output)]

    assert listed("unreachable") == [member.reference]
    assert listed("bounced") == [target["reference"]]
    helped = " ".join(mailroom.run("letters", "list", "--help").output.split())
    assert "bounced the letter to the target bounced: we cannot reach the MP or employer" in helped
    assert "unreachable the member's invitation bounced: we cannot reach the member" in helped

    status = mailroom.run("wave", "status", WAVE).output
    assert "  bounced      1  (the letter to the target bounced)\n" in status
    assert "  unreachable  1  (the member's invitation bounced: the letter never went)\n" in status
    assert "  1 unreachable (the member's invitation bounced: the letter never went): 5.1.1" in status
    counted = json.loads(mailroom.run("wave", "status", WAVE, "--json").output)
    assert (counted["states"]["bounced"], counted["states"]["unreachable"]) == (1, 1)
    assert sorted((row["state"], row["unreachable"]) for row in counted["undelivered"]) == [
        ("bounced", "target"),
        ("unreachable", "member"),
    ]

    bounces = json.loads(mailroom.run("replies", "list", "--kind", "bounce", "--json").output)
    assert sorted((row["bounced_message"], row["unreachable"]) for row in bounces) == [
        ("invitation", "member"),
        ("letter", "target"),
    ]
    table = mailroom.run("replies", "list", "--kind", "bounce").output
    assert f"member's invitation 5.1.1 {member.email}" in table
    assert f"letter to its target 5.1.1 {target['target_email']}" in table

    # Weeks later, no target is chased about a letter that never went to it.
    chase(engine, SETTINGS, WAVE, now=utcnow() + timedelta(days=60))
    assert state_of(engine, member.id) == "unreachable"
    with engine.connect() as conn:
        assert conn.execute(select(lt.id).where(lt.parent_id == member.id)).all() == []

    with Site(engine) as site:
        page = requests.get(f"{site.base}/l/{link_token(SETTINGS.secret, member.link_nonce)}", timeout=10)
        assert "Our email to you about this letter came back undelivered" in page.text
        page = requests.get(f"{site.base}/l/{link_token(SETTINGS.secret, target['link_nonce'])}", timeout=10)
        assert f"Your letter to {target['target_name']} came back undelivered" in page.text
