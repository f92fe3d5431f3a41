"""Incoming mail against a real launched and sent wave: matching, forwards, bounces, complaints, follow-ups."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from conftest import ROOT
from sqlalchemy import select
from test_waves import SETTINGS, load_sample, sample  # noqa: F401  (the sample-data fixture)
from test_web import Site

from engine.errors import CampaignError
from engine.inbox.ingest import Ingester
from engine.inbox.sources import EmlSource, MaildirSource, MboxSource
from engine.inbox.staff import (
    accept_suggestion,
    dismiss,
    list_messages,
    log_paper_reply,
    match_manually,
    set_outcome,
)
from engine.letters.confirm import letter_for_member, letter_for_token, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.links import link_token, verp_tag
from engine.letters.waves import WaveSpec, create_wave
from engine.mail.outbox import parse_message
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.store.models import (
    failure_table,
    inbound_table,
    letter_table,
    member_table,
    outbox_table,
    suppression_table,
)

MAIL = Path(__file__).parent / "mail"
WAVE = "Employers"

# Each sample goes to its own member's letter, so one sent wave serves them all.
SAMPLES = [
    "fwd-gmail-en",
    "fwd-gmail-de",
    "fwd-outlook-desktop",
    "fwd-outlook-web",
    "fwd-new-outlook-html",
    "fwd-apple-mail",
    "fwd-thunderbird-fr",
    "fwd-thunderbird-es",
    "fwd-outlook-cy",
    "fwd-yahoo",
    "fwd-gmail-it",
    "fwd-outlook-nl",
    "fwd-thunderbird-pl",
    "fwd-attached",
    "direct-reply-in-reply-to",
    "direct-reply-ref-in-subject",
    "direct-reply-plus-address",
    "direct-reply-outlook-quote",
    "member-question",
    "auto-reply",
    "bounce-verp",
    "bounce-temporary",
    "complaint-arf",
    "broken-mime",
    "charset-unknown",
    "newsletter",
]

# What ingest must make of each: kind, how it matched, the real author, what becomes of the letter.
FORWARDS = {
    "fwd-gmail-en": ("Priya Raman", "holding"),
    "fwd-gmail-de": ("Jürgen Weiß", None),  # suggestions read English only
    "fwd-outlook-desktop": ("Marion Lloyd", "refusal"),
    "fwd-outlook-web": ("Marion Lloyd", "acknowledgement"),
    "fwd-new-outlook-html": ("Marion Lloyd", "supportive"),
    "fwd-apple-mail": ("Marion Lloyd", "non_committal"),
    "fwd-thunderbird-fr": ("Amélie Dubois", None),
    "fwd-thunderbird-es": ("Lucía Fernández", None),
    "fwd-outlook-cy": ("Rhian Llywelyn", None),
    "fwd-yahoo": ("Marion Lloyd", "supportive"),
    "fwd-gmail-it": ("Giulia Rossi", None),
    "fwd-outlook-nl": ("Daan de Vries", None),
    "fwd-thunderbird-pl": ("Anna Kowalska", None),
}


def fill(name: str, letter: dict) -> bytes:
    data = (MAIL / f"{name}.eml").read_bytes()
    for key, value in letter["placeholders"].items():
        data = data.replace(b"{{" + key.encode() + b"}}", value.encode())
    assert b"{{" not in data, name
    return data


@pytest.fixture
def sent(sample, tmp_path):  # noqa: F811
    """An employer wave whose first letters were confirmed and delivered (to a folder)."""
    create_wave(
        sample, WAVE, WaveSpec(target="employer", letter="employer-wellbeing", invite="invitation"), SETTINGS
    )
    launch_wave(sample, WAVE, SETTINGS)
    with sample.connect() as conn:
        members = (
            conn.execute(
                select(member_table.c.membership_no)
                .join(letter_table, letter_table.c.member_id == member_table.c.id)
                .where(letter_table.c.target_email.is_not(None))
                .order_by(member_table.c.id)
            )
            .scalars()
            .all()
        )
    assert len(members) >= len(SAMPLES) + 3
    for number in members[: len(SAMPLES) + 3]:
        found = letter_for_member(sample, WAVE, number)
        assert send_for_me(sample, SETTINGS, found, found.text, None)
    result = send_outbox(
        sample, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None
    )
    assert result.failed == 0
    letters = {}
    with sample.connect() as conn:
        rows = conn.execute(
            select(letter_table, member_table.c.email, member_table.c.first_name, member_table.c.last_name)
            .join(member_table, member_table.c.id == letter_table.c.member_id)
            .where(letter_table.c.state == "sent")
            .order_by(letter_table.c.id)
        ).all()
        for name, row in zip(SAMPLES + ["spare1", "spare2", "spare3"], rows, strict=True):
            letter = dict(row._mapping)
            ids = dict(
                conn.execute(
                    select(outbox_table.c.kind, outbox_table.c.message_id).where(
                        outbox_table.c.letter_id == letter["id"]
                    )
                ).all()
            )
            letter["placeholders"] = {
                "REF": letter["reference"],
                "MEMBER": letter["email"],
                "MEMBER_NAME": f"{letter['first_name']} {letter['last_name']}",
                "TARGET": letter["target_email"],
                "TARGET_NAME": letter["target_name"],
                "LETTER_MSGID": ids["letter"],
                "INVITE_MSGID": ids["invitation"],
                "VERP": verp_tag(ids["letter"]),
            }
            letters[name] = letter
    return sample, letters


def state_of(engine, letter_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(letter_table.c.state).where(letter_table.c.id == letter_id)).scalar_one()


def stored(engine, inbound_id: int) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(inbound_table).where(inbound_table.c.id == inbound_id)).one()._mapping
        )


@pytest.fixture
def ingested(sent):
    engine, letters = sent
    ingester = Ingester(engine, SETTINGS)
    ids = {name: ingester.record(fill(name, letters[name]), "eml") for name in SAMPLES}
    assert all(ids.values())
    return engine, letters, ids


def test_every_forward_is_matched_to_its_letter_with_the_real_author_and_date(ingested):
    engine, letters, ids = ingested
    for name, (author, outcome) in FORWARDS.items():
        row = stored(engine, ids[name])
        letter = letters[name]
        assert (row["kind"], row["letter_id"], row["forwarded"]) == ("reply", letter["id"], True), name
        assert row["match_method"] == "sender", name
        assert row["author_name"] == author, name
        assert row["author_addr"] == letter["target_email"].lower(), name
        assert row["authored_at"].astimezone(UTC).date() == datetime(2026, 11, 16).date(), name
        # The forwarded reply's own words: not the member's note above it, not the letter quoted below.
        assert "wrote:" not in row["text"] and "> " not in row["text"], name
        assert not row["text"].startswith(("They replied", "Please see", "Forwarding")), name
        assert row["suggested_outcome"] == outcome, name
        # A holding reply or an acknowledgement is no answer yet: the letter still awaits one.
        answered = outcome not in ("holding", "acknowledgement")
        assert state_of(engine, letter["id"]) == ("replied" if answered else "sent"), name
    assert stored(engine, ids["fwd-gmail-en"])["text"].startswith(
        "Dear colleague,\n\nThank you for your letter."
    )


def test_direct_replies_match_by_message_id_or_tagged_address(ingested):
    engine, letters, ids = ingested
    by_id = stored(engine, ids["direct-reply-in-reply-to"])
    assert (by_id["match_method"], by_id["letter_id"], by_id["forwarded"]) == (
        "in_reply_to",
        letters["direct-reply-in-reply-to"]["id"],
        False,
    )
    assert by_id["text"].startswith("Dear colleague")
    by_tag = stored(engine, ids["direct-reply-plus-address"])
    assert (by_tag["match_method"], by_tag["letter_id"], by_tag["triage"]) == (
        "address_tag",
        letters["direct-reply-plus-address"]["id"],
        None,
    )
    attached = stored(engine, ids["fwd-attached"])
    assert (attached["match_method"], attached["author_name"]) == ("reference", "Marion Lloyd")
    assert attached["text"].startswith("Dear colleague,\n\nThank you. I will write")
    # "We will respond fully after the board meets", "we will reply in full next week": holding replies.
    for name in ("direct-reply-in-reply-to", "direct-reply-plus-address"):
        assert state_of(engine, letters[name]["id"]) == "sent"
    assert state_of(engine, letters["fwd-attached"]["id"]) == "replied"


def test_mail_that_only_names_a_reference_waits_for_staff_with_its_suggestion(ingested):
    """Anyone who has seen a letter knows its reference: naming it proves nothing."""
    engine, letters, ids = ingested
    by_ref = stored(engine, ids["direct-reply-ref-in-subject"])
    assert (by_ref["letter_id"], by_ref["suggested_letter_id"], by_ref["match_method"]) == (
        None,
        letters["direct-reply-ref-in-subject"]["id"],
        "reference",
    )
    assert by_ref["triage"].startswith("claims to answer a letter without answering a message of ours")
    # Outlook quotes the letter under the same header block it uses for forwards: still a reply, by its author.
    quoting = stored(engine, ids["direct-reply-outlook-quote"])
    assert (quoting["suggested_letter_id"], quoting["forwarded"]) == (
        letters["direct-reply-outlook-quote"]["id"],
        False,
    )
    assert quoting["author_addr"] == letters["direct-reply-outlook-quote"]["target_email"].lower()
    assert quoting["text"].startswith("Dear colleague,") and "impact assessment" not in quoting["text"]
    for name in ("direct-reply-ref-in-subject", "direct-reply-outlook-quote"):
        assert state_of(engine, letters[name]["id"]) == "sent"
    waiting = {row["id"]: row for row in list_messages(engine, unmatched=True)}
    assert (
        waiting[ids["direct-reply-ref-in-subject"]]["suggested_reference"]
        == (letters["direct-reply-ref-in-subject"]["reference"])
    )
    # Staff check the sender and accept: the letter is replied and its follow-up drafted.
    done = accept_suggestion(engine, SETTINGS, ids["direct-reply-outlook-quote"])
    assert (done["reference"], done["replied"]) == (letters["direct-reply-outlook-quote"]["reference"], True)
    assert state_of(engine, letters["direct-reply-outlook-quote"]["id"]) == "replied"
    assert stored(engine, ids["direct-reply-outlook-quote"])["triage"] is None
    assert ids["direct-reply-outlook-quote"] not in {r["id"] for r in list_messages(engine, unmatched=True)}
    with pytest.raises(CampaignError, match="not waiting for staff"):
        accept_suggestion(engine, SETTINGS, ids["direct-reply-outlook-quote"])


def test_a_member_writing_in_their_own_words_is_kept_on_the_letter_but_is_no_reply(ingested):
    engine, letters, ids = ingested
    row = stored(engine, ids["member-question"])
    assert (row["kind"], row["letter_id"], row["match_method"]) == (
        "reply",
        letters["member-question"]["id"],
        "in_reply_to",
    )
    assert state_of(engine, letters["member-question"]["id"]) == "sent"


def test_auto_replies_are_recorded_on_the_letter_and_change_nothing(ingested):
    engine, letters, ids = ingested
    row = stored(engine, ids["auto-reply"])
    assert (row["kind"], row["letter_id"]) == ("auto_reply", letters["auto-reply"]["id"])
    assert state_of(engine, letters["auto-reply"]["id"]) == "sent"


def test_a_permanent_bounce_marks_message_and_letter_bounced_a_temporary_one_nothing(ingested):
    engine, letters, ids = ingested
    letter = letters["bounce-verp"]
    with engine.connect() as conn:
        failures = conn.execute(
            select(failure_table).where(failure_table.c.inbound_id == ids["bounce-verp"])
        ).all()
        assert [(f.address, f.status, f.permanent) for f in failures] == [
            (letter["target_email"].lower(), "5.1.1", True)
        ]
        assert "User unknown" in failures[0].diagnostic
        message = conn.execute(select(outbox_table).where(outbox_table.c.id == failures[0].outbox_id)).one()
        assert (message.kind, message.status) == ("letter", "bounced")
        bounced = conn.execute(select(letter_table).where(letter_table.c.id == letter["id"])).one()
    assert bounced.state == "bounced" and bounced.bounce_reason.startswith("5.1.1")
    temporary = letters["bounce-temporary"]
    with engine.connect() as conn:
        failure = conn.execute(
            select(failure_table).where(failure_table.c.inbound_id == ids["bounce-temporary"])
        ).one()
    assert (failure.status, failure.permanent) == ("4.2.2", False)
    assert state_of(engine, temporary["id"]) == "sent"


def test_a_complaint_stops_campaign_mail_to_that_address(ingested, tmp_path):
    engine, letters, ids = ingested
    letter = letters["complaint-arf"]
    address = letter["email"].lower()
    with engine.connect() as conn:
        assert conn.execute(select(suppression_table.c.address)).scalars().all() == [address]
        opted_out = conn.execute(
            select(member_table.c.mail_opt_out_at).where(member_table.c.id == letter["member_id"])
        ).scalar_one()
    assert opted_out is not None
    # Mail queued to that address afterwards is held back by the sending worker too.
    with engine.begin() as conn:
        conn.execute(
            outbox_table.insert().values(
                letter_id=letter["id"],
                kind="receipt",
                to_addr=f"Someone <{address}>",
                subject="late receipt",
                message_id="<late-receipt@union.example>",
                status="queued",
                attempts=0,
                created_at=datetime.now(UTC),
            )
        )
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "after"), rate=10_000, sleep=lambda s: None)
    with engine.connect() as conn:
        status = conn.execute(
            select(outbox_table.c.status).where(outbox_table.c.message_id == "<late-receipt@union.example>")
        ).scalar_one()
    assert status == "suppressed"
    assert not any("late receipt" in p.read_text() for p in (tmp_path / "after").glob("*.eml"))


def test_unreadable_and_unrelated_mail_is_kept_raw_and_listed(ingested):
    engine, letters, ids = ingested
    broken = stored(engine, ids["broken-mime"])
    assert broken["raw"] == fill("broken-mime", letters["broken-mime"])
    assert broken["problem"] == "broken MIME: a multipart has no boundary; the multipart structure is broken"
    assert [row["id"] for row in list_messages(engine, problems=True)] == [ids["broken-mime"]]
    assert broken["letter_id"] == letters["broken-mime"]["id"]  # its subject still names the letter
    odd = stored(engine, ids["charset-unknown"])
    assert odd["letter_id"] == letters["charset-unknown"]["id"]
    assert "caf" in odd["text"] and "reply from the head" in odd["text"]
    news = stored(engine, ids["newsletter"])
    assert (news["kind"], news["letter_id"]) == ("unrelated", None)
    assert news["dedupe_key"].startswith("sha256:")  # it has no Message-ID
    unmatched = list_messages(engine, unmatched=True)
    # Beside the two replies that only name their letter (set aside for staff).
    assert [row["id"] for row in unmatched] == [
        ids["newsletter"],
        ids["direct-reply-outlook-quote"],
        ids["direct-reply-ref-in-subject"],
    ]
    bounces = list_messages(engine, kind="bounce")
    assert {(b["failed_recipient"], b["status"]) for b in bounces} == {
        (letters["bounce-verp"]["target_email"].lower(), "5.1.1"),
        (letters["bounce-temporary"]["target_email"].lower(), "4.2.2"),
    }
    assert all(b["reference"] for b in bounces)


def test_ingesting_again_records_nothing_twice(ingested, tmp_path):
    engine, letters, ids = ingested
    folder = tmp_path / "again"
    folder.mkdir()
    for name in SAMPLES:
        (folder / f"{name}.eml").write_bytes(fill(name, letters[name]))
    result = Ingester(engine, SETTINGS).ingest(EmlSource([folder]))
    assert (result.stored, result.duplicates) == (0, len(SAMPLES))


def test_an_employer_reply_drafts_the_follow_up_and_invites_the_member_to_confirm_it(ingested, tmp_path):
    engine, letters, ids = ingested
    original = letters["fwd-outlook-desktop"]
    with engine.connect() as conn:
        follow_up = dict(
            conn.execute(
                select(letter_table).where(
                    letter_table.c.parent_id == original["id"], letter_table.c.kind == "follow_up"
                )
            )
            .one()
            ._mapping
        )
        invitation = conn.execute(
            select(outbox_table).where(outbox_table.c.letter_id == follow_up["id"])
        ).one()
    assert follow_up["reference"] != original["reference"]
    assert follow_up["target_email"] == original["target_email"]
    # The template quotes the reply's first paragraph after the greeting.
    assert 'you wrote: "I am afraid we are not in a position to write' in follow_up["body_text"]
    assert (invitation.kind, invitation.status) == ("follow_up_invitation", "queued")
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "later"), rate=10_000, sleep=lambda s: None)
    [path] = (tmp_path / "later").glob(f"*follow_up_invitation-{follow_up['reference']}*")
    message = parse_message(path.read_bytes())
    assert message["To"].addresses[0].addr_spec == original["email"]
    text = message.get_body(("plain",)).get_content()
    # One member, one link per wave: the invitation carries the first letter's link, which
    # opens the follow-up on the same page as the first letter.
    token = link_token(SETTINGS.secret, original["link_nonce"])
    assert f"/l/{token}" in text
    found = letter_for_token(engine, link_token(SETTINGS.secret, follow_up["link_nonce"]))
    assert found is not None and found.letter["id"] == follow_up["id"]
    with Site(engine) as site:
        page = requests.get(f"{site.base}/l/{token}", timeout=10)
    assert f"<h1>Your letters to {original['target_name']}</h1>" in page.text
    assert "replied to your letter" in page.text
    assert state_of(engine, follow_up["id"]) == "invited"
    # A second reply to the same letter drafts nothing more.
    again = fill("fwd-outlook-desktop", original).replace(b"FwdDesk0003", b"FwdDesk0003-again")
    Ingester(engine, SETTINGS).record(again, "eml")
    with engine.connect() as conn:
        count = conn.execute(
            select(letter_table.c.id).where(letter_table.c.parent_id == original["id"])
        ).all()
    assert len(count) == 1


def test_staff_match_unmatched_mail_log_paper_replies_and_set_outcomes(ingested, tmp_path):
    engine, letters, ids = ingested
    spare = letters["spare1"]
    done = match_manually(engine, SETTINGS, ids["newsletter"], spare["reference"].lower())
    assert (done["replied"], done["follow_up"]) == (True, True)
    assert state_of(engine, spare["id"]) == "replied"
    dismiss(engine, ids["direct-reply-outlook-quote"])
    match_manually(engine, SETTINGS, ids["direct-reply-ref-in-subject"], letters["spare3"]["reference"])
    assert list_messages(engine, unmatched=True) == []
    assert state_of(engine, letters["direct-reply-outlook-quote"]["id"]) == "sent"  # dismissed: nothing done
    with pytest.raises(CampaignError, match="is a bounce"):
        match_manually(engine, SETTINGS, ids["bounce-verp"], spare["reference"])
    with pytest.raises(CampaignError, match="no letter with reference"):
        match_manually(engine, SETTINGS, ids["newsletter"], "ZZZZZ-ZZZZZ")

    paper = letters["spare2"]
    scan = b"%PDF-1.4 a scanned letter"
    when = datetime(2026, 11, 20, tzinfo=UTC)
    paper_reply = {
        "author": "Chair of Governors",
        "scan": scan,
        "scan_name": "scan.pdf",
        "note": "Will raise it with the board in January",
    }
    logged = log_paper_reply(engine, SETTINGS, paper["reference"], when, **paper_reply)
    again = log_paper_reply(engine, SETTINGS, paper["reference"], when, **paper_reply)
    assert again == {**logged, "already": True, "follow_up": False}
    row = stored(engine, logged["reply"])
    assert (row["source"], row["raw"], row["attachment_name"], row["letter_id"]) == (
        "paper",
        scan,
        "scan.pdf",
        paper["id"],
    )
    assert state_of(engine, paper["id"]) == "replied"

    reply_id = ids["fwd-outlook-desktop"]
    assert set_outcome(engine, reply_id, "holding")["suggested"] == "refusal"
    assert stored(engine, reply_id)["outcome"] == "holding"
    with pytest.raises(CampaignError, match="only replies"):
        set_outcome(engine, ids["bounce-verp"], "supportive")


def test_mbox_and_maildir_sources_read_every_message(sent, tmp_path):
    import mailbox

    engine, letters = sent
    box = mailbox.mbox(tmp_path / "in.mbox")
    names = ["fwd-gmail-en", "auto-reply", "bounce-verp"]
    for name in names:
        box.add(fill(name, letters[name]))
    box.flush()
    box.close()
    result = Ingester(engine, SETTINGS).ingest(MboxSource(tmp_path / "in.mbox"))
    assert (result.stored, dict(result.kinds)) == (3, {"reply": 1, "auto_reply": 1, "bounce": 1})
    maildir = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for name in names + ["newsletter"]:
        maildir.add(fill(name, letters[name]))
    result = Ingester(engine, SETTINGS).ingest(MaildirSource(tmp_path / "Maildir"))
    assert (result.stored, result.duplicates) == (1, 3)
    with pytest.raises(CampaignError, match="not a Maildir"):
        MaildirSource(tmp_path)
    with pytest.raises(CampaignError, match="no such mbox"):
        MboxSource(tmp_path / "missing.mbox")


def test_a_huge_attachment_is_stored_whole_and_the_reply_still_matched(sent):
    from email.message import EmailMessage

    engine, letters = sent
    letter = letters["spare3"]
    message = EmailMessage()
    message["From"] = letter["email"]
    message["To"] = "organising@union.example"
    message["Subject"] = f"Fwd: the trust's reply [Ref: {letter['reference']}]"
    message["Message-ID"] = "<huge-attachment@members.example.org>"
    message.set_content("The trust's reply is in the attached scan.")
    message.add_attachment(
        bytes(range(256)) * 100_000, maintype="application", subtype="pdf", filename="reply.pdf"
    )
    data = message.as_bytes()
    assert len(data) > 30_000_000
    inbound_id = Ingester(engine, SETTINGS).record(data, "eml")
    row = stored(engine, inbound_id)
    assert (row["size"], row["letter_id"], row["match_method"]) == (len(data), letter["id"], "reference")
    assert row["raw"] == data


def test_cli_ingest_list_and_show(sent, tmp_path, db_url):
    from click.testing import CliRunner

    from engine.cli import main

    engine, letters = sent
    folder = tmp_path / "mail"
    folder.mkdir()
    for name in ("fwd-gmail-en", "bounce-verp", "newsletter"):
        (folder / f"{name}.eml").write_bytes(fill(name, letters[name]))
    env = {"CAMPAIGN_TEMPLATES": str(ROOT / "templates"), "CAMPAIGN_SECRET": SETTINGS.secret}
    runner = CliRunner()
    result = runner.invoke(main, ["--db", db_url, "replies", "ingest", "--eml", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    assert "3 stored (1 bounce, 1 reply, 1 unrelated)" in result.output
    # The reply is a holding one ("will write to you again in due course"): no follow-up yet.
    assert "0 letters replied, 1 bounced, 0 addresses suppressed, 0 follow-ups drafted" in result.output
    listed = runner.invoke(main, ["--db", db_url, "replies", "list", "--json"], env=env)
    import json

    rows = json.loads(listed.output)
    assert {r["kind"]: r["reference"] for r in rows} == {
        "reply": letters["fwd-gmail-en"]["reference"],
        "bounce": letters["bounce-verp"]["reference"],
        "unrelated": None,
    }
    bounce = next(r for r in rows if r["kind"] == "bounce")
    assert (bounce["failed_recipient"], bounce["status"]) == (
        letters["bounce-verp"]["target_email"].lower(),
        "5.1.1",
    )
    shown = runner.invoke(
        main,
        ["--db", db_url, "replies", "show", str(next(r["id"] for r in rows if r["kind"] == "reply"))],
        env=env,
    )
    assert "written by: Priya Raman" in shown.output and "(forwarded)" in shown.output
    bad = runner.invoke(main, ["--db", db_url, "replies", "ingest", "--eml", str(tmp_path / "nope")], env=env)
    assert bad.exit_code == 2 and "no such file or folder" in bad.output
    both = runner.invoke(
        main, ["--db", db_url, "replies", "ingest", "--eml", str(folder), "--mbox", "x"], env=env
    )
    assert both.exit_code == 2 and "exactly one of" in both.output


def test_a_message_is_kept_even_when_acting_on_it_fails(sent, monkeypatch):
    engine, letters = sent

    def broken(*args, **kwargs):
        raise RuntimeError("the follow-up template is missing")

    monkeypatch.setattr(Ingester, "act", broken)
    data = fill("fwd-gmail-en", letters["fwd-gmail-en"])
    inbound_id = Ingester(engine, SETTINGS).record(data, "eml")
    row = stored(engine, inbound_id)
    assert row["raw"] == data and row["letter_id"] == letters["fwd-gmail-en"]["id"]
    assert (
        row["problem"] == "stored, but acting on it failed: RuntimeError: the follow-up template is missing"
    )
    assert [r["id"] for r in list_messages(engine, problems=True)] == [inbound_id]
    assert state_of(engine, letters["fwd-gmail-en"]["id"]) == "sent"


def test_acting_on_a_message_that_fails_part_way_undoes_what_it_wrote(sent, monkeypatch):
    """A reply's letter is changed (marked replied, or its reply clock restarted) before anything
    else is done: when a later step fails, the letter is as it was, and the message is kept
    with why."""
    from engine.inbox import act

    engine, letters = sent
    letter_id = letters["fwd-attached"]["id"]
    with engine.connect() as conn:
        before = dict(conn.execute(select(letter_table).where(letter_table.c.id == letter_id)).one()._mapping)

    def writes_then_fails(real):
        def step(*args, **kwargs):
            real(*args, **kwargs)
            raise RuntimeError("the follow-up template is missing")

        return step

    monkeypatch.setattr(act, "mark_replied", writes_then_fails(act.mark_replied))
    monkeypatch.setattr(act, "restart_reply_clock", writes_then_fails(act.restart_reply_clock))
    data = fill("fwd-attached", letters["fwd-attached"])
    inbound_id = Ingester(engine, SETTINGS).record(data, "eml")
    row = stored(engine, inbound_id)
    assert row["raw"] == data and row["letter_id"] == letter_id
    assert (
        row["problem"] == "stored, but acting on it failed: RuntimeError: the follow-up template is missing"
    )
    with engine.connect() as conn:
        after = dict(conn.execute(select(letter_table).where(letter_table.c.id == letter_id)).one()._mapping)
    assert after == before
    monkeypatch.undo()
    # The next copy with another Message-ID acts in full: the transaction was left usable.
    again = Ingester(engine, SETTINGS).record(data.replace(b"Message-ID: <", b"Message-ID: <again-"), "eml")
    assert stored(engine, again)["problem"] is None
    assert state_of(engine, letter_id) == "replied"


def test_cli_match_log_outcome_and_chase(sent, tmp_path, db_url):
    import json

    from click.testing import CliRunner

    from engine.cli import main

    engine, letters = sent
    env = {"CAMPAIGN_TEMPLATES": str(ROOT / "templates"), "CAMPAIGN_SECRET": SETTINGS.secret}
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, ["--db", db_url, *args], env=env)

    news = tmp_path / "news.eml"
    news.write_bytes(fill("newsletter", letters["newsletter"]))
    assert run("replies", "ingest", "--eml", str(news)).exit_code == 0
    [row] = json.loads(run("replies", "list", "--unmatched", "--json").output)
    matched = run("replies", "match", str(row["id"]), letters["spare1"]["reference"])
    assert matched.exit_code == 0, matched.output
    assert "the letter is now replied" in matched.output and "follow-up letter is drafted" in matched.output
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.4 scanned")
    logged = run(
        "replies", "log", letters["spare2"]["reference"], "--received", "2026-11-20",
        "--from", "Chair of Governors", "--file", str(scan), "--note", "We will consider it",
    )  # fmt: skip
    assert logged.exit_code == 0, logged.output
    assert "Logged as message" in logged.output
    again = run(
        "replies", "log", letters["spare2"]["reference"], "--received", "2026-11-20",
        "--from", "Chair of Governors", "--file", str(scan), "--note", "We will consider it",
    )  # fmt: skip
    assert "Already logged" in again.output
    outcome = run("replies", "outcome", str(row["id"]), "supportive")
    assert outcome.exit_code == 0 and "supportive" in outcome.output
    wrong = run("replies", "outcome", str(row["id"]), "delighted")
    assert wrong.exit_code == 2
    chased = run("chase", "--json")
    assert chased.exit_code == 0
    assert json.loads(chased.output)["overdue"] == 0  # nothing is ten working days old yet
    raw = run("replies", "show", str(row["id"]), "--raw")
    assert raw.output == fill("newsletter", letters["newsletter"]).decode()


def test_each_step_of_ingest_can_be_called_alone(sent):
    """Read, classify, match, store raw and act: each step a function a test can call by itself."""
    from engine.inbox.act import act
    from engine.inbox.classify import classify, parse
    from engine.inbox.ingest import dedupe_key, message_row, store_raw
    from engine.inbox.match import Matcher
    from engine.store.models import utcnow

    engine, letters = sent
    letter = letters["direct-reply-in-reply-to"]
    data = fill("direct-reply-in-reply-to", letter)
    message = parse(data)
    assert classify(message).kind == "ordinary"
    matcher = Matcher(SETTINGS)
    with engine.begin() as conn:
        analysis = matcher.analyse(conn, message)
        assert (analysis.kind, analysis.letter["id"], analysis.method, analysis.triage) == (
            "reply",
            letter["id"],
            "in_reply_to",
            None,
        )
        key, message_id = dedupe_key(message, data)
        row = message_row(data, "eml", message, message_id, key, analysis, None, utcnow())
        inbound_id = store_raw(conn, row, key)
        assert inbound_id is not None
        assert store_raw(conn, row, key) is None  # the same message again is stored once
        done = act(conn, inbound_id, analysis, matcher, SETTINGS, utcnow())
    # "We will respond fully after the board meets": a holding reply, so the letter still awaits one.
    assert (done.letters_replied, done.follow_ups) == (0, 0)
    assert stored(engine, inbound_id)["raw"] == data
    assert state_of(engine, letter["id"]) == "sent"


def test_unmatched_forwards_come_with_the_likeliest_letters_and_the_command_to_match_each(
    sent, tmp_path, db_url
):
    import json

    from click.testing import CliRunner
    from test_waves import MP_WAVE

    from engine.cli import main

    engine, letters = sent
    env = {"CAMPAIGN_TEMPLATES": str(ROOT / "templates"), "CAMPAIGN_SECRET": SETTINGS.secret}

    def run(*args: str):
        result = CliRunner().invoke(main, ["--db", db_url, *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    # One member also wrote to their MP: two letters await a reply, so their forward is ambiguous.
    create_wave(engine, "MPs", MP_WAVE, SETTINGS)
    launch_wave(engine, "MPs", SETTINGS)
    both = None
    for name in ("spare2", "spare3", *SAMPLES):
        with engine.connect() as conn:
            number = conn.execute(
                select(member_table.c.membership_no).where(member_table.c.id == letters[name]["member_id"])
            ).scalar_one()
        try:
            mp_letter = letter_for_member(engine, "MPs", number)
        except CampaignError:
            continue
        assert send_for_me(engine, SETTINGS, mp_letter, mp_letter.text, "1 Test Road\nSevenoaks")
        both = letters[name]
        break
    assert both is not None
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "mp-out"), rate=0, sleep=lambda s: None)
    mp_letter = letter_for_member(engine, "MPs", number).letter
    assert mp_letter["state"] == "sent"

    home = letters["spare1"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name, letter, extra in (
        ("fwd-from-home-address", home, {"TARGET_DOMAIN": home["target_email"].rpartition("@")[2]}),
        # Neither the author (the MP's own address) nor the subject tells the two letters apart.
        ("fwd-two-open-letters", both, {"SUBJECT": "Your email"}),
    ):
        data = fill(name, {"placeholders": {**letter["placeholders"], **extra}})
        (folder / f"{name}.eml").write_bytes(data)
    assert "0 letters replied" in run("replies", "ingest", "--eml", str(folder))

    rows = {row["subject"]: row for row in json.loads(run("replies", "list", "--unmatched", "--json"))}
    from_home = rows["Fwd: RE: Protecting school leaders and their teams"]
    ambiguous = rows["Fwd: Re: Your email"]
    # Forwarded from an address we do not know, signed with the member's name, by their employer's HR.
    first = from_home["suggestions"][0]
    assert first["reference"] == home["reference"]
    assert first["why"].startswith(
        "sent by someone with its member's name, from its recipient's domain, subject "
    )
    assert first["command"] == f"campaign replies match {from_home['id']} {home['reference']}"
    assert 1 <= len(from_home["suggestions"]) <= 3
    # The member's own address, two letters awaiting, nothing to choose between them: both are
    # offered, the newer first, and neither is guessed.
    assert [s["reference"] for s in ambiguous["suggestions"]] == [mp_letter["reference"], both["reference"]]
    assert [s["why"] for s in ambiguous["suggestions"]] == ["forwarded by its member"] * 2

    listed = run("replies", "list", "--unmatched")
    command = f"campaign replies match {ambiguous['id']} {mp_letter['reference']}"
    assert f"    {command}   # {mp_letter['target_name']}, member {number}: forwarded by its member" in listed
    assert f"  could be: {command}" in run("replies", "show", str(ambiguous["id"]))
    # The command as printed does it.
    matched = run(*command.split()[1:])
    assert (
        f"Message {ambiguous['id']} matched to {mp_letter['reference']}; the letter is now replied" in matched
    )
    assert state_of(engine, mp_letter["id"]) == "replied"
    assert state_of(engine, both["id"]) == "sent"
