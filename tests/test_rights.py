"""Members' data rights: a copy of all we hold on a member, erasure that keeps only anonymous
counts, and purging old reply bodies. Union membership is special-category data."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import DATA, TEST_SECRET, Cli
from forward_corpus import Reply, build_forward
from sqlalchemy import select, update
from test_waves import SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.cli import main
from engine.errors import CampaignError
from engine.inbox.ingest import Ingester
from engine.letters.confirm import letter_for_member, letter_for_token, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.links import link_token
from engine.letters.waves import WaveSpec, create_wave, wave_status
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.members.importer import get_member, import_members
from engine.members.rights import export_member, forget_member, purge_messages
from engine.store.models import event_table, inbound_table, letter_table, member_table, outbox_table, utcnow

WAVE = "Employers"


@pytest.fixture
def replied(sample, tmp_path):  # noqa: F811
    """A member whose employer letter went and whose employer's reply they forwarded."""
    create_wave(
        sample, WAVE, WaveSpec(target="employer", letter="employer-wellbeing", invite="invitation"), SETTINGS
    )
    launch_wave(sample, WAVE, SETTINGS)
    with sample.connect() as conn:
        number = conn.execute(
            select(member_table.c.membership_no)
            .join(letter_table, letter_table.c.member_id == member_table.c.id)
            .where(letter_table.c.target_email.is_not(None))
            .order_by(member_table.c.id)
        ).scalar()
    found = letter_for_member(sample, WAVE, number)
    assert send_for_me(sample, SETTINGS, found, found.text + "\nMy own words: Ofsted day was hard.", None)
    send_outbox(sample, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None)
    member = get_member(sample, number)
    letter = letter_for_member(sample, WAVE, number).letter
    reply = Reply("HR Director", letter["target_email"], f"RE: {letter['subject']}",
                  "Dear colleague,\n\nWe support your request and will write to the Secretary of State.")  # fmt: skip
    raw = build_forward(
        "outlook_web", "en", reply, f"{member['first_name']} {member['last_name']}", member["email"]
    ).raw
    inbound_id = Ingester(sample, SETTINGS).record(raw, "eml")
    return sample, member, letter, inbound_id


def test_a_members_export_holds_their_details_letters_emails_messages_and_events(replied):
    engine, member, letter, inbound_id = replied
    data = export_member(engine, member["membership_no"])
    assert data["member"]["email"] == member["email"] and data["member"]["postcode"] == member["postcode"]
    assert "row_hash" not in data["member"]
    [exported] = [x for x in data["letters"] if x["id"] == letter["id"]]
    assert "My own words: Ofsted day was hard." in exported["final_text"]
    assert "token_hash" not in exported and "link_nonce" not in exported  # secrets are not data about them
    assert {e["kind"] for e in data["emails"]} >= {"invitation", "letter", "receipt"}
    assert [m["id"] for m in data["messages"]] == [inbound_id]
    assert "write to the Secretary of State" in data["messages"][0]["text"]
    json.dumps(data)  # plain JSON all through


def test_forgetting_a_member_erases_them_stops_their_link_and_keeps_the_counts(replied, db_url):
    engine, member, letter, inbound_id = replied
    before = wave_status(engine, WAVE)["states"]
    token = link_token(SETTINGS.secret, letter["link_nonce"])
    assert letter_for_token(engine, token) is not None
    result = forget_member(engine, member["membership_no"])
    assert (result.letters, result.messages) == (2, 1)  # the letter and its drafted follow-up
    # Counts stand: the letter is still in its state, in its wave.
    assert wave_status(engine, WAVE)["states"] == before
    with pytest.raises(CampaignError, match="no member"):
        get_member(engine, member["membership_no"])
    with engine.connect() as conn:
        row = conn.execute(select(member_table).where(member_table.c.id == member["id"])).one()
        stored = conn.execute(select(letter_table).where(letter_table.c.id == letter["id"])).one()
        message = conn.execute(select(inbound_table).where(inbound_table.c.id == inbound_id)).one()
        to_addrs = " ".join(conn.execute(select(outbox_table.c.to_addr)).scalars())
    assert (row.first_name, row.last_name, row.postcode, row.address_line1, row.custom) == (
        "",
        "",
        "",
        None,
        {},
    )
    assert row.email.endswith("@forgotten.invalid") and row.forgotten_at is not None
    assert row.region == member["region"]  # what reports count by stays
    assert (stored.body_text, stored.final_text, stored.merge_snapshot) == ("", None, {})
    assert (message.raw, message.text, message.from_addr, message.kind) == (b"", None, None, "reply")
    assert member["email"] not in to_addrs
    # Their link leads nowhere now.
    assert letter_for_token(engine, token) is None
    if db_url.startswith("sqlite"):
        # Not in free space or the write-ahead log either: a person checking the file finds nothing.
        path = Path(db_url.removeprefix("sqlite:///"))
        wal = path.with_name(path.name + "-wal")
        blob = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        full_name = f"{member['first_name']} {member['last_name']}"
        for value in (member["email"], full_name, "Ofsted day was hard"):
            assert value.encode() not in blob, value
    # The log says a member was forgotten, not which.
    with engine.connect() as conn:
        details = [json.dumps(d) for d in conn.execute(select(event_table.c.detail)).scalars()]
    assert not any(member["membership_no"] in d or member["email"] in d for d in details)


def test_an_older_import_does_not_bring_a_forgotten_member_back_unless_restored(replied, tmp_path):
    engine, member, _, _ = replied
    forget_member(engine, member["membership_no"])
    again = import_members(engine, DATA / "members.csv", skip_invalid=True, rejects_path=tmp_path / "r.csv")
    assert (again.forgotten, again.created) == (1, 0)
    with pytest.raises(CampaignError):
        get_member(engine, member["membership_no"])
    back = import_members(
        engine, DATA / "members.csv", skip_invalid=True, rejects_path=tmp_path / "r.csv", restore=True
    )
    assert (back.restored, back.created) == (1, 1)
    assert get_member(engine, member["membership_no"])["email"] == member["email"]


def test_purge_removes_old_bodies_and_keeps_what_they_were(replied):
    engine, _, letter, inbound_id = replied
    with engine.begin() as conn:
        conn.execute(
            update(inbound_table)
            .where(inbound_table.c.id == inbound_id)
            .values(received_at=utcnow() - timedelta(days=400))
        )
    dry = purge_messages(engine, 365, dry_run=True)
    assert (dry.messages, dry.by_kind) == (1, {"reply": 1})
    with engine.connect() as conn:
        assert (
            conn.execute(select(inbound_table.c.raw).where(inbound_table.c.id == inbound_id)).scalar() != b""
        )
    done = purge_messages(engine, 365)
    assert done.messages == 1 and purge_messages(engine, 365).messages == 0
    with engine.connect() as conn:
        row = conn.execute(select(inbound_table).where(inbound_table.c.id == inbound_id)).one()
        state = conn.execute(select(letter_table.c.state).where(letter_table.c.id == letter["id"])).scalar()
    assert (row.raw, row.text, row.kind, row.letter_id) == (b"", None, "reply", letter["id"])
    assert row.purged_at is not None and state in ("replied", "followed_up")
    with pytest.raises(CampaignError, match="--older-than"):
        purge_messages(engine, 0)


def test_the_commands_ask_first_and_say_what_they_did(replied, db_url, tmp_path):
    engine, member, _, _ = replied
    cli = Cli(db_url)
    out = tmp_path / "sar.json"
    done = cli("members", "export", member["membership_no"], "--out", str(out))
    assert done.exit_code == 0 and json.loads(out.read_text())["member"]["email"] == member["email"]
    refused = cli.runner.invoke(
        main, ["--db", db_url, "members", "forget", member["membership_no"]], input="n\n", env=cli_env()
    )
    assert refused.exit_code == 1 and get_member(engine, member["membership_no"])
    forgot = cli("members", "forget", member["membership_no"], "--yes")
    assert forgot.exit_code == 0 and f"{member['membership_no']} forgotten" in forgot.output
    unknown = cli("members", "forget", "M999999", "--yes")
    assert unknown.exit_code == 2 and "no member with membership number 'M999999'" in unknown.output
    dry = cli("purge", "--older-than", "30", "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.output)["dry_run"] is True


def cli_env() -> dict[str, str | None]:
    return {"CAMPAIGN_SECRET": TEST_SECRET, "CAMPAIGN_SECRET_FILE": None}
