"""Letter state changes staff make by hand: taking back a member's decision made by mistake."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.letters.confirm import letter_for_member
from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.store.models import event_table, letter_table, outbox_table

WAVE = "MPs"


@pytest.fixture
def launched(sample, tmp_path):  # noqa: F811
    create_wave(sample, WAVE, MP_WAVE, SETTINGS)
    launch_wave(sample, WAVE, SETTINGS)
    # The invitations go, so every letter is `invited`.
    send_outbox(sample, SETTINGS, FolderTransport(tmp_path / "invitations"), rate=0, sleep=lambda s: None)
    return sample


def letter(engine, membership_no: str) -> dict:
    return letter_for_member(engine, WAVE, membership_no).letter


def undo_events(engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            row.detail
            for row in conn.execute(
                select(event_table).where(event_table.c.action == "letter.undo").order_by(event_table.c.id)
            )
        ]


def letter_messages(engine, letter_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(outbox_table.c.status).where(
                    outbox_table.c.letter_id == letter_id, outbox_table.c.kind == "letter"
                )
            ).scalars()
        )


def test_staff_take_back_an_opt_out_and_a_self_sent_and_the_member_decides_again(cli, launched):
    assert cli("letters", "decide", WAVE, "M100004", "opt-out").exit_code == 0
    assert cli("letters", "decide", WAVE, "M100005", "self").exit_code == 0
    undone = cli("letters", "decide", WAVE, "M100004", "--undo")
    assert undone.exit_code == 0, undone.output
    assert undone.stdout.startswith("M100004: opt-out taken back for letter ")
    assert "it is invited again" in undone.stdout
    assert cli("letters", "decide", WAVE, "M100005", "--undo").exit_code == 0
    opted, self_sent = letter(launched, "M100004"), letter(launched, "M100005")
    assert (opted["state"], opted["decided_at"]) == ("invited", None)
    assert self_sent["state"] == "invited"
    assert undo_events(launched) == [
        {"reference": opted["reference"], "undone": "opted_out", "by": "staff"},
        {"reference": self_sent["reference"], "undone": "self_sent", "by": "staff"},
    ]
    # The member can decide again, as on their page.
    assert cli("letters", "decide", WAVE, "M100004", "self").exit_code == 0
    assert letter(launched, "M100004")["state"] == "self_sent"


def test_taking_back_a_send_for_me_removes_its_message_and_keeps_the_members_words(cli, launched, tmp_path):
    edited = tmp_path / "edited.txt"
    edited.write_text("Dear MP,\n\nMy own words about our school.\n\nYours sincerely\n", encoding="utf-8")
    done = cli(
        "letters", "decide", WAVE, "M100003", "send", "--text-file", str(edited), "--address", "1 A St|Leeds"
    )
    assert done.exit_code == 0, done.output
    queued = letter(launched, "M100003")
    assert queued["state"] == "queued" and letter_messages(launched, queued["id"]) == ["queued"]
    undone = cli("letters", "decide", WAVE, "M100003", "--undo")
    assert undone.exit_code == 0, undone.output
    assert "send (not yet sent) taken back" in undone.stdout
    back = letter(launched, "M100003")
    assert back["state"] == "invited"
    assert back["final_text"] == "Dear MP,\n\nMy own words about our school.\n\nYours sincerely\n"
    assert back["sender_address"] == "1 A St\nLeeds"
    assert letter_messages(launched, queued["id"]) == []
    # Nothing goes to the MP.
    result = send_outbox(launched, SETTINGS, FolderTransport(tmp_path / "out"), rate=0, sleep=lambda s: None)
    assert result.sent == 0


def test_a_sent_letter_or_one_being_sent_cannot_be_taken_back(cli, launched, tmp_path):
    assert cli("letters", "decide", WAVE, "M100003", "send").exit_code == 0
    assert cli("letters", "decide", WAVE, "M100005", "send").exit_code == 0
    sending = letter(launched, "M100005")
    with launched.begin() as conn:
        conn.execute(
            outbox_table.update()
            .where(outbox_table.c.letter_id == sending["id"], outbox_table.c.kind == "letter")
            .values(status="claimed", claimed_by="elsewhere:1:worker")
        )
    refused = cli("letters", "decide", WAVE, "M100005", "--undo")
    assert refused.exit_code == 2
    assert refused.output == (
        f"Error: letter {sending['reference']} is already on its way to {sending['target_name']} "
        "(its message is claimed): it cannot be taken back\n"
    )
    assert letter(launched, "M100005")["state"] == "queued"
    assert letter_messages(launched, sending["id"]) == ["claimed"]

    send_outbox(launched, SETTINGS, FolderTransport(tmp_path / "out"), rate=0, sleep=lambda s: None)
    sent = letter(launched, "M100003")
    assert sent["state"] == "sent"
    refused = cli("letters", "decide", WAVE, "M100003", "--undo")
    assert refused.exit_code == 2
    assert refused.output == (
        f"Error: letter {sent['reference']} is sent: it was sent to its target, "
        "and a sent letter cannot be unsent\n"
    )
    assert letter(launched, "M100003")["state"] == "sent"
    undecided = cli("letters", "decide", WAVE, "M100006", "--undo")
    assert undecided.exit_code == 2
    assert "is invited: the member has not decided yet: there is nothing to undo" in undecided.output
    assert cli("letters", "decide", WAVE, "M100006").exit_code == 2
    assert undo_events(launched) == []


def test_upgrading_marks_letters_whose_invitation_bounced_unreachable_and_keeps_target_bounces(
    cli, launched, tmp_path
):
    from alembic import command

    from engine.store.db import _alembic_config, head_revision, init_db

    assert cli("letters", "decide", WAVE, "M100003", "send").exit_code == 0
    send_outbox(launched, SETTINGS, FolderTransport(tmp_path / "out"), rate=0, sleep=lambda s: None)
    to_target, to_member = letter(launched, "M100003"), letter(launched, "M100004")
    command.downgrade(_alembic_config(launched), "0007")
    # As schema 0007 recorded them: both `bounced`, one at its MP, one at the member's own address.
    o, lt = outbox_table.c, letter_table.c
    with launched.begin() as conn:
        for row, kind in ((to_target, "letter"), (to_member, "invitation")):
            conn.execute(
                outbox_table.update().where(o.letter_id == row["id"], o.kind == kind).values(status="bounced")
            )
            conn.execute(letter_table.update().where(lt.id == row["id"]).values(state="bounced"))
    assert init_db(launched) == ("0007", head_revision())
    assert letter(launched, "M100003")["state"] == "bounced"
    assert letter(launched, "M100004")["state"] == "unreachable"
