"""Waves: creating, editing, previewing and launching, on the sample data."""

from __future__ import annotations

import csv
import email
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from conftest import DATA, ROOT, TEST_SECRET
from sqlalchemy import func, select

from engine.errors import CampaignError, RowErrors
from engine.letters.confirm import letter_for_member
from engine.letters.documents import iter_letters
from engine.letters.launch import launch_wave, preview_merge
from engine.letters.waves import WaveSpec, create_wave, edit_wave, get_wave, wave_status
from engine.lookup.employers import import_contacts
from engine.lookup.postcode_cache import load_cache_file
from engine.lookup.reps import import_mps
from engine.lookup.resolve import resolve_members
from engine.lookup.schools import import_schools
from engine.mail.outbox import export_outbox
from engine.members.importer import import_members, set_mail_opt_out
from engine.members.postcode import normalise_postcode
from engine.settings import Settings
from engine.store.db import init_db, open_engine
from engine.store.models import letter_table, member_table, mp_table, outbox_table

SETTINGS = Settings.from_env({"CAMPAIGN_SECRET": TEST_SECRET}, templates_dir=str(ROOT / "templates"))
MP_WAVE = WaveSpec(target="mp", letter="mp-inspection", invite="invitation")
EMPLOYER_WAVE = WaveSpec(target="employer", letter="employer-wellbeing", invite="invitation", reply_days=15)


def load_sample(engine, tmp_path):
    """The bundled sample data, imported and resolved offline, as `make demo` does."""
    import_members(engine, DATA / "members.csv", skip_invalid=True, rejects_path=tmp_path / "rejects.csv")
    import_schools(engine, DATA / "edubasealldata.csv")
    import_contacts(engine, DATA / "employer-contacts.csv")
    import_mps(engine, DATA / "mps.csv")
    load_cache_file(engine, DATA / "postcodes.json")
    resolve_members(engine, None)
    return engine


@pytest.fixture
def sample(engine, tmp_path):
    return load_sample(engine, tmp_path)


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_launch_makes_one_letter_per_eligible_member_and_queues_invitations(sample):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    result = launch_wave(sample, "MPs", SETTINGS, list_skipped=True)
    # 59 members: the MP letter is for England only, so the 11 whose constituency is in Scotland (4),
    # Wales (4) or Northern Ireland (3) are left out; 8 more have no MP (6) or an uncached postcode (2).
    assert (result.created, result.invitations_queued, result.skipped) == (
        40,
        40,
        {"outside_nations": 11, "unresolved": 8},
    )
    assert {
        "membership_no": "M100021",
        "reason": "unresolved",
        "detail": "seat vacant: Hackney North and Stoke Newington",
    } in result.skipped_members
    assert count(sample, letter_table) == 40
    assert count(sample, outbox_table) == 40
    status = wave_status(sample, "MPs")
    assert (status["states"], status["outbox"]) == ({"drafted": 40}, {"queued": 40})


def test_launching_twice_never_makes_a_second_letter(sample):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    again = launch_wave(sample, "MPs", SETTINGS)
    assert (again.created, again.already) == (0, 40)
    assert count(sample, letter_table) == 40
    assert count(sample, outbox_table) == 40


def test_employer_wave_counts_each_reason(sample):
    set_mail_opt_out(sample, "M100001")
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    result = launch_wave(sample, "Employers", SETTINGS, list_skipped=True)
    # The two members at the Welsh school are outside the wave's nations (England, from the letter);
    # the three with no school have no employer; 16 have a school GIAS gives no employer for.
    assert result.skipped == {
        "opted_out": 1,
        "outside_nations": 2,
        "unresolved": 16,
        "no_employer": 3,
        "no_employer_contact": 5,
    }
    assert result.created == 32
    gap = next(s for s in result.skipped_members if s["reason"] == "no_employer_contact")
    assert gap["detail"].startswith("no contact for ")


NO_SCHOOL = {"M100055": "Supply teacher", "M100056": "Retired", "M100057": "Central staff"}


def test_members_without_a_school_write_to_their_mp_and_fixed_targets_and_count_as_no_employer(sample, cli):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    for number, role in NO_SCHOOL.items():
        found = letter_for_member(sample, "MPs", number)
        assert found.letter["target_name"].endswith(" MP")
        # The letter says who they are without claiming a school they do not have.
        text = " ".join(found.text.split())
        assert (
            "I am one of your constituents and a member of Example Schools Union, "
            f"the union for school staff ({role})."
        ) in text
        assert "I work in a school" not in text
    # A fixed-target wave (the Secretary of State) writes for them too.
    sos = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to="Secretary of State <sos@education.example>",
    )
    create_wave(sample, "SoS", sos, SETTINGS)
    launch_wave(sample, "SoS", SETTINGS)
    retired = " ".join(letter_for_member(sample, "SoS", "M100056").text.split())
    assert "I am a member of Example Schools Union, the union for school staff (Retired), and I am" in retired
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    result = launch_wave(sample, "Employers", SETTINGS, list_skipped=True)
    assert result.skipped["no_employer"] == 3
    assert {
        s["membership_no"]: s["detail"] for s in result.skipped_members if s["reason"] == "no_employer"
    } == {number: "no school on record (supply, central or retired staff)" for number in NO_SCHOOL}
    status = cli("wave", "status", "Employers")
    assert "  left out 3: no employer (no school: supply, central or retired staff)\n" in status.stdout
    as_json = json.loads(cli("wave", "status", "Employers", "--json").stdout)
    assert as_json["left_out"]["no_employer"] == 3


def test_the_demo_mp_wave_leaves_out_exactly_the_members_outside_england(sample):
    # Worked out from the data files, not by the engine: each member's postcode's country.
    countries = {
        answer["query"]: answer["result"]["country"]
        for answer in json.loads((DATA / "postcodes.json").read_text())["result"]
        if answer["result"]
    }
    with (DATA / "members.csv").open(encoding="utf-8-sig", newline="") as f:
        elsewhere = {
            row["Membership No"]: countries[postcode]
            for row in csv.DictReader(f)
            if (postcode := normalise_postcode(row["Postcode"])) in countries
            and countries[postcode] != "England"
        }
    assert sorted(set(elsewhere.values())) == ["Northern Ireland", "Scotland", "Wales"]
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    result = launch_wave(sample, "MPs", SETTINGS, list_skipped=True)
    left_out = {
        s["membership_no"]: s["detail"] for s in result.skipped_members if s["reason"] == "outside_nations"
    }
    assert left_out == {
        number: f"constituency in {country}; the wave covers England" for number, country in elsewhere.items()
    }
    assert len(left_out) == 11
    with sample.connect() as conn:
        written_for = set(
            conn.execute(
                select(member_table.c.membership_no).join(
                    letter_table, letter_table.c.member_id == member_table.c.id
                )
            ).scalars()
        )
    assert not written_for & set(elsewhere)


def test_letter_freezes_the_merge_and_the_target(sample):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    with sample.begin() as conn:
        conn.execute(mp_table.update().values(email="changed@parliament.example.org", name="Someone Else MP"))
        conn.execute(member_table.update().values(first_name="Changed"))
    with sample.connect() as conn:
        letter = (
            conn.execute(
                select(letter_table)
                .join(member_table, member_table.c.id == letter_table.c.member_id)
                .where(member_table.c.membership_no == "M100001")
            )
            .one()
            ._mapping
        )
    assert letter["target_name"] == "Harriet Alden MP"
    assert letter["target_email"] == "harriet.alden.mp@parliament.example"
    assert letter["target_address"] == "House of Commons\nLondon\nSW1A 0AA"
    assert letter["subject"] == "Ofsted's revised framework and school staff in Sevenoaks"
    assert letter["body_text"].startswith("Dear Ms Alden,\n\nI am one of your constituents")
    assert "Aisha Khan\n1 Orchard Way\nSevenoaks\nBR8 7RE\n" in letter["body_text"]
    assert letter["merge_snapshot"]["member"]["first_name"] == "Aisha"
    assert len(letter["reference"]) == 11 and letter["reference"][5] == "-"
    assert len(letter["token_hash"]) == 64
    # Timestamps written by the fast insert path read back as SQLAlchemy wrote them.
    expiry = letter["token_expires_at"] - letter["created_at"]
    assert letter["created_at"].tzinfo is not None
    assert abs(expiry.total_seconds() - 30 * 86400) < 60


def test_where_filters_members(sample):
    create_wave(
        sample,
        "Teachers",
        WaveSpec(
            target="mp",
            letter="mp-inspection",
            invite="invitation",
            where=["region=yorkshire and the humber|South West", "role=Teacher"],
        ),
        SETTINGS,
    )
    result = launch_wave(sample, "Teachers", SETTINGS)
    m = member_table.c
    with sample.connect() as conn:
        chosen = set(
            conn.execute(select(m.region, m.role).join(letter_table, letter_table.c.member_id == m.id)).all()
        )
        expected = conn.execute(
            select(func.count())
            .select_from(member_table)
            .where(
                m.region.in_(["Yorkshire and the Humber", "South West"]),
                m.role == "Teacher",
                m.mp_status == "resolved",
            )
        ).scalar_one()
    assert chosen == {("Yorkshire and the Humber", "Teacher"), ("South West", "Teacher")}
    assert result.created == expected == 6


def test_fixed_wave_sends_every_letter_to_one_recipient(sample):
    spec = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        to="Secretary of State for Education <sos@education.example>",
        to_address="Sanctuary Buildings|20 Great Smith Street|London|SW1P 3BT",
        to_salutation="Secretary of State",
    )
    create_wave(sample, "SoS", spec, SETTINGS)
    result = launch_wave(sample, "SoS", SETTINGS)
    # England only: 59 members less the 11 whose constituency is elsewhere and the 2 whose
    # postcode is not resolved (their nation is not known).
    assert (result.created, result.skipped) == (46, {"outside_nations": 13})
    targets = {(r["target_name"], r["target_email"]) for r in iter_letters(sample, wave="SoS")}
    assert targets == {("Secretary of State for Education", "sos@education.example")}


def test_fixed_wave_needs_a_recipient(sample):
    with pytest.raises(CampaignError, match="a fixed wave needs its one recipient"):
        create_wave(
            sample,
            "SoS",
            WaveSpec(target="fixed", letter="secretary-of-state", invite="invitation"),
            SETTINGS,
        )


def test_waves_are_editable_until_launched(sample):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    assert edit_wave(sample, "MPs", WaveSpec(reply_days=20), SETTINGS)["reply_days"] == 20
    launch_wave(sample, "MPs", SETTINGS)
    with pytest.raises(CampaignError, match="it can no longer be edited"):
        edit_wave(sample, "MPs", WaveSpec(reply_days=5), SETTINGS)


def test_unknown_field_is_refused_at_create_with_file_and_line(sample, tmp_path):
    letter = tmp_path / "letters" / "bad.txt"
    letter.parent.mkdir()
    (tmp_path / "letters" / "layout.html").write_text((ROOT / "templates/letters/layout.html").read_text())
    letter.write_text(
        "{% block subject %}Hi{% endblock %}\n{% block body %}\nDear {{ target.salutation }},\n"
        "{{ member.nick_name }}\n{% endblock %}\n"
    )
    with pytest.raises(RowErrors) as caught:
        create_wave(sample, "Bad", WaveSpec(target="mp", letter=str(letter), invite="invitation"), SETTINGS)
    assert caught.value.problems[0].startswith(f"{letter}:4: unknown field member.nick_name")


def test_a_render_error_at_launch_names_the_line_and_writes_nothing(sample, tmp_path):
    letters = tmp_path / "letters"
    letters.mkdir()
    (letters / "layout.html").write_text((ROOT / "templates/letters/layout.html").read_text())
    (letters / "upper.txt").write_text(
        "{% block subject %}Hi{% endblock %}\n{% block body %}\n"
        "Dear {{ target.salutation }},\n{{ member.address_line2.upper() }}\n{% endblock %}\n"
    )
    create_wave(
        sample,
        "Upper",
        WaveSpec(target="mp", letter=str(letters / "upper.txt"), invite="invitation"),
        SETTINGS,
    )
    with pytest.raises(CampaignError, match=rf"^{letters / 'upper.txt'}:4: "):
        launch_wave(sample, "Upper", SETTINGS)
    assert count(sample, letter_table) == 0
    assert get_wave(sample, "Upper")["status"] == "draft"


def test_member_named_script_stays_text(sample):
    with sample.begin() as conn:
        conn.execute(
            member_table.update()
            .where(member_table.c.membership_no == "M100001")
            .values(first_name="<script>alert(1)</script>")
        )
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    wave, letter, invitation, merger = preview_merge(sample, "MPs", SETTINGS, "M100001")
    from engine.letters.documents import letter_html

    assert "&lt;script&gt;alert(1)&lt;/script&gt; Khan" in letter_html(letter, merger.renderer)
    from engine.letters.documents import letter_document
    from engine.mail.outbox import build_invitation, parse_message

    assert "<script>" not in letter_document(letter, merger.renderer)
    html = (
        parse_message(build_invitation(invitation, letter, wave, merger.renderer, SETTINGS))
        .get_body(("html",))
        .get_content()
    )
    assert "Dear &lt;script&gt;alert(1)&lt;/script&gt;," in html


def test_preview_writes_nothing(sample):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    wave, letter, invitation, _ = preview_merge(sample, "MPs", SETTINGS, "M100003")
    assert letter["target_name"] == "Harriet Alden MP"
    assert invitation["subject"] == "Your letter to Harriet Alden MP is ready to check"
    assert count(sample, letter_table) == 0
    with pytest.raises(CampaignError, match="M100021 cannot take part: unresolved"):
        preview_merge(sample, "MPs", SETTINGS, "M100021")


def test_exported_eml_files_parse_back_into_the_expected_message(sample, tmp_path):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    assert export_outbox(sample, tmp_path / "out", SETTINGS).written == 40
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == 40
    assert not list((tmp_path / "out").glob(".tmp-*"))
    message = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    reference = files[0].stem.split("-invitation-")[1]
    assert message["From"] == "Campaigns Team <campaigns@union.example>"
    assert message["To"] == "Aisha Khan <aisha.khan@members.example.org>"
    assert message["Subject"] == "Your letter to Harriet Alden MP is ready to check"
    assert re.fullmatch(rf"<{reference}\.invitation\.[0-9a-f]{{16}}@union\.example>", message["Message-ID"])
    assert message["Reply-To"] == "organising@union.example"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/unsubscribe/")
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = next(line.strip() for line in text.splitlines() if "/l/" in line)
    assert f'href="{link}"' in html
    assert "<style" not in html and 'style="' in html  # CSS inlined
    assert f"Reference: {reference}" in text


def test_cli_wave_flow(cli, sample, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    created = cli(
        "wave",
        "create",
        "MPs autumn",
        "--target",
        "mp",
        "--letter",
        "mp-inspection",
        "--invite",
        "invitation",
    )
    assert created.exit_code == 0, created.output
    preview = cli("wave", "preview", "MPs autumn", "--member", "M100003")
    assert "Subject: Ofsted's revised framework and school staff in Sevenoaks" in preview.stdout
    assert "Catherine Doyle" in preview.stdout
    launched = cli("wave", "launch", "MPs autumn", "--json")
    summary = json.loads(launched.stdout)
    assert (summary["created"], summary["skipped"]) == (40, {"outside_nations": 11, "unresolved": 8})
    listed = json.loads(cli("letters", "list", "--wave", "MPs autumn", "--json").stdout)
    assert len(listed) == 40 and listed[0]["state"] == "drafted"
    status = json.loads(cli("wave", "status", "MPs autumn", "--json").stdout)
    assert status["states"] == {"drafted": 40}
    missing = cli("wave", "launch", "Nope")
    assert missing.exit_code == 2
    assert "no wave named 'Nope'" in missing.stderr


def test_pdf_prints_every_name(sample, tmp_path):
    pypdf = pytest.importorskip("pypdf")
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    from engine.letters.documents import write_wave_pdfs

    refs = [
        r["reference"]
        for r in iter_letters(sample, wave="Employers")
        if r["member"] in ("Łukasz Kowalski", "Siân Owen", "Nguyễn Thi Lan")
    ]
    assert refs, "the sample has members with these names in the employer wave"
    run = write_wave_pdfs(sample, "Employers", tmp_path, combined=True, states=["all"], references=refs)
    [combined] = run.files
    reader = pypdf.PdfReader(combined)
    assert len(reader.pages) == len(refs)
    text = "\n".join(page.extract_text() for page in reader.pages)
    for ref in refs:
        assert ref in text
    single = write_wave_pdfs(sample, "Employers", tmp_path / "one", states=["all"], references=refs[:1]).files
    assert single == [tmp_path / "one" / f"{refs[0]}.pdf"]
    assert Path(single[0]).read_bytes().startswith(b"%PDF-")


def test_parallel_launch_matches_the_sequential_one(sample):
    """Large waves merge in a worker process; force that path on the sample."""
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    result = launch_wave(sample, "MPs", SETTINGS, parallel=True, list_skipped=True)
    assert (result.created, result.skipped) == (40, {"outside_nations": 11, "unresolved": 8})
    assert len(result.skipped_members) == 19
    with sample.connect() as conn:
        pairs = conn.execute(
            select(letter_table.c.reference, outbox_table.c.message_id).join(
                outbox_table, outbox_table.c.letter_id == letter_table.c.id
            )
        ).all()
        created = conn.execute(select(letter_table.c.created_at)).scalars().first()
    assert len(pairs) == 40
    assert all(message_id.startswith(f"<{reference}.invitation.") for reference, message_id in pairs)
    assert created.tzinfo is not None
    again = launch_wave(sample, "MPs", SETTINGS, parallel=True)
    assert (again.created, again.already) == (0, 40)


FIXED = ["--target", "fixed", "--letter", "secretary-of-state", "--invite", "invitation"]
SOS = "Secretary of State <sos@education.example>"


@pytest.mark.parametrize(
    "args, error",
    [
        (
            ["SoS", "--to", SOS, "--subject", "Pause\r\nBcc: all@example.org"],
            "--subject: contains a line break (U+000D)",
        ),
        (
            ["SoS", "--to", "Secretary of State\n<sos@education.example>"],
            "--to: contains a line break (U+000A)",
        ),
        (
            ["SoS", "--to", SOS, "--to-salutation", "Minister\x00"],
            "--to-salutation: contains a control character (U+0000)",
        ),
        (
            ["SoS", "--to", SOS, "--to-address", "Sanctuary Buildings|London\x1b|SW1P 3BT"],
            "--to-address: contains a control character (U+001B)",
        ),
        (["SoS", "--to", SOS, "--where", "branch=Kent\u2028"], "--where: contains a line break (U+2028)"),
        (["So\u0085S", "--to", SOS], "wave name: contains a line break (U+0085)"),
    ],
    ids=["subject", "to", "to-salutation", "to-address", "where", "name"],
)
def test_wave_create_refuses_line_breaks_in_what_reaches_headers(cli, monkeypatch, args, error):
    monkeypatch.chdir(ROOT)
    result = cli("wave", "create", *args, *FIXED)
    assert (result.exit_code, result.stderr) == (2, f"Error: {error}\n")
    assert json.loads(cli("wave", "list", "--json").stdout) == []


def test_a_postal_address_given_in_lines_is_still_accepted(cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = cli(
        "wave", "create", "SoS", *FIXED, "--to", SOS, "--to-address", "Sanctuary Buildings\nLondon\nSW1P 3BT"
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(cli("wave", "show", "SoS", "--json").stdout)
    assert shown["fixed_address"] == "Sanctuary Buildings\nLondon\nSW1P 3BT"


def test_preview_and_pdf_to_a_path_that_cannot_be_written_fail_in_one_line(
    cli, sample, tmp_path, monkeypatch
):
    """Paths under a regular file, or in /proc, cannot be written even by root."""
    monkeypatch.chdir(ROOT)
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    work = tmp_path / "work"
    work.mkdir()
    blocker = work / "not-a-folder"
    blocker.write_text("x")
    taken = work / "taken.html"
    taken.mkdir()
    attempts = {
        str(blocker / "preview.pdf"): f"{blocker}: is a file, not a folder",
        str(taken): f"{taken}: cannot write: Is a directory",
        "/proc/self/preview.eml": "/proc/self/preview.eml: cannot write: No such file or directory",
    }
    for out, error in attempts.items():
        result = cli("wave", "preview", "MPs", "--out", out)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {error}\n")
    launch_wave(sample, "MPs", SETTINGS)
    for out, error in {
        str(blocker / "pdfs"): f"{blocker / 'pdfs'}: cannot create the folder: Not a directory",
        "/proc/campaign-pdfs": "/proc/campaign-pdfs: cannot create the folder: No such file or directory",
    }.items():
        result = cli("wave", "pdf", "MPs", "--out", out, "--limit", "1")
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {error}\n")
    # Nothing half-written: no temporary file left beside the targets.
    assert sorted(p.name for p in work.iterdir()) == ["not-a-folder", "taken.html"]
    assert list(taken.iterdir()) == []


def children_of(pid: int) -> dict[int, str]:
    """Live child processes of `pid` and their command lines, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses: the fields follow the last ")".
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state not in ("Z", "X"):
            found[int(entry.name)] = cmdline
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # an orphan's zombie waits for a reaper that may never come


def big_wave(engine, members: int) -> None:
    """An MP wave of `members` resolved members, written directly: importing them is not the point."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            mp_table.insert().values(
                constituency_code="E14001465",
                constituency_name="Sevenoaks",
                vacant=False,
                name="Harriet Alden MP",
                email="harriet.alden.mp@parliament.example",
                address_as="Ms Alden",
                source="csv",
                updated_at=now,
            )
        )
        conn.execute(
            member_table.insert(),
            [
                {
                    "membership_no": f"B{i:06d}",
                    "first_name": "Member",
                    "last_name": f"Number {i}",
                    "email": f"m{i}@members.example.org",
                    "postcode": "BR8 7RE",
                    "school_urn": "118402",
                    "custom": {},
                    "row_hash": "x",
                    "created_at": now,
                    "updated_at": now,
                    "mp_status": "resolved",
                    "employer_status": "pending",
                    "constituency_code": "E14001465",
                    "constituency_name": "Sevenoaks",
                }
                for i in range(members)
            ],
        )
    create_wave(engine, "Big", MP_WAVE, SETTINGS)


def test_a_killed_launch_leaves_no_worker_behind_and_a_rerun_launches_everyone(tmp_path):
    """SIGKILL a launch while its merge worker runs: the worker must go too, and nothing is lost.

    The worker is asked for: by default a launch takes one only when a core is idle.
    """
    url = f"sqlite:///{tmp_path}/big.db"
    engine = open_engine(url)
    init_db(engine)
    big_wave(engine, 20_000)
    script = (
        "import sys\n"
        "from engine.letters.launch import launch_wave\n"
        "from engine.settings import Settings\n"
        "from engine.store.db import open_engine\n"
        "settings = Settings.from_env({'CAMPAIGN_SECRET': sys.argv[2]})\n"
        "launch_wave(open_engine(sys.argv[1]), 'Big', settings, parallel=True)\n"
    )
    launch = subprocess.Popen(
        [sys.executable, "-c", script, url, SETTINGS.secret],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while not workers and time.monotonic() < deadline and launch.poll() is None:
            workers = {pid: cmd for pid, cmd in children_of(launch.pid).items() if "spawn_main" in cmd}
            time.sleep(0.01)
        assert len(workers) == 1, f"no merge worker seen: {launch.stderr.read().decode()}"
        launch.send_signal(signal.SIGKILL)
        launch.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in workers if alive(pid)] == [], "the merge worker outlived the killed launch"
    finally:
        launch.stderr.close()
        for pid in workers:  # on failure, do not leave them behind for the rest of the run
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert count(engine, letter_table) == 0  # the killed launch's transaction never committed
    result = launch_wave(engine, "Big", SETTINGS)
    assert (result.created, result.already) == (20_000, 0)
    assert count(engine, letter_table) == count(engine, outbox_table) == 20_000
    engine.dispose()


def test_wave_asks_is_one_plain_sentence_shown_in_the_invitation_and_editable_until_launch(
    cli, sample, monkeypatch
):
    monkeypatch.chdir(ROOT)
    base = [
        "wave",
        "create",
        "MPs autumn",
        "--target",
        "mp",
        "--letter",
        "mp-inspection",
        "--invite",
        "invitation",
    ]
    for asks, error in (
        ("It asks your MP\nBcc: everyone", "--asks: contains a line break (U+000A): give one plain sentence"),
        ("x" * 301, "--asks: 301 characters: say what the letter asks in one short sentence (at most 300)"),
        (
            "It asks {{ target.name }} to act.",
            "--asks: plain words only, no template fields: it is shown as written",
        ),
    ):
        refused = cli(*base, "--asks", asks)
        assert (refused.exit_code, refused.stderr) == (2, f"Error: {error}\n")
    assert json.loads(cli("wave", "list", "--json").stdout) == []
    created = cli(*base, "--asks", "It asks your MP to raise inspections with ministers.")
    assert created.exit_code == 0, created.output
    assert "  the invitation says: It asks your MP to raise inspections with ministers.\n" in created.stdout
    edited = cli("wave", "edit", "MPs autumn", "--asks", "It asks your MP to back an independent review.")
    assert edited.exit_code == 0, edited.output
    assert json.loads(cli("wave", "show", "MPs autumn", "--json").stdout)["asks"] == (
        "It asks your MP to back an independent review."
    )
    preview = cli("wave", "preview", "MPs autumn", "--member", "M100003")
    assert "\n\nIt asks your MP to back an independent review.\n\n" in preview.stdout
    assert cli("wave", "launch", "MPs autumn").exit_code == 0
    late = cli("wave", "edit", "MPs autumn", "--asks", "Something else.")
    assert late.exit_code == 2 and "can no longer be edited" in late.stderr
