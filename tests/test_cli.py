"""The command line as a whole: help, documentation, and the demo."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from email import message_from_bytes
from email.policy import default

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT

from engine.cli import main


def all_commands(group: click.Group, prefix: str = "campaign"):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from all_commands(command, path)
        else:
            yield path, command


COMMANDS = list(all_commands(main))


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_help_an_example_and_a_readme_entry(path, command):
    assert command.help and command.get_short_help_str(), f"{path} has no help text"
    assert "Example" in command.help, f"{path} help has no example"
    assert f"`{path}" in (ROOT / "README.md").read_text(), f"{path} is not documented in README.md"


def test_help_runs():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "Campaign Engine" in result.stdout


def test_offline_and_refresh_together_is_a_usage_error(tmp_path):
    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/c.db"
    runner.invoke(main, ["--db", url, "init"])
    result = runner.invoke(main, ["--db", url, "resolve", "--offline", "--refresh"])
    assert result.exit_code == 2
    assert "--offline and --refresh cannot be used together" in result.stderr


def test_make_demo_runs_offline_on_the_sample_data(tmp_path):
    """The README's first command: the whole flow so far, on the bundled data."""
    env = {k: v for k, v in os.environ.items() if k not in ("CAMPAIGN_SECRET", "CAMPAIGN_SECRET_FILE")}
    env.update(POSTCODES_IO_URL="http://127.0.0.1:9", MEMBERS_API_URL="http://127.0.0.1:9")
    # Run the Makefile's own recipe with the interpreter running these tests.
    stamp = tmp_path / "installed"
    stamp.touch()
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "demo",
            f"DEMO_DIR={tmp_path}/demo",
            f"BIN={os.path.dirname(sys.executable)}",
            f"STAMP={stamp}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # `campaign init` made the link secret beside the demo database, and every later step used it.
    key = tmp_path / "demo" / "campaign.db.key"
    assert f"Created the link secret {key}" in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "59 created, 0 updated, 0 unchanged, 4 rejected" in out
    assert "Extra columns kept as merge fields: years_in_post, official, inspector." in out
    assert "MP:       resolved 51, no MP 6, not looked up (offline) 2" in out
    assert (
        "Employer: resolved 38, unknown URN 11, closed school 1, independent 1, no trust named 3, "
        "no rule for type 2, no school (no employer) 3\n"
    ) in out
    assert "la:330" in out  # Birmingham: members but no contact
    # Both waves reach England only (the letters' front matter): members in Scotland, Wales and
    # Northern Ireland are counted, as are the members with no school in the employer wave.
    assert "Wave 'MPs: inspection and well-being': 40 letter(s) created, 40 invitation(s) queued" in out
    assert "  skipped 11: outside the wave's nations (--nations)\n" in out
    assert "Wave 'Employers: well-being assessment': 33 letter(s) created, 33 invitation(s) queued" in out
    assert "  skipped 3: no employer (no school: supply, central or retired staff)\n" in out
    assert "  skipped 2: outside the wave's nations (--nations)\n" in out
    # 73 invitations, 2 letters confirmed through the member-page code path, and their 2 receipts.
    assert "77 sent, 0 to retry later, 0 failed." in out
    assert "  sent         2\n  opted_out    1\n" in out
    # Three employer letters and their receipts; then the replies, and the follow-up's invitation.
    assert "6 sent, 0 to retry later, 0 failed." in out
    assert "4 stored (1 auto reply, 1 bounce, 2 reply); 0 already stored." in out
    assert "1 letters replied, 0 bounced, 0 addresses suppressed, 1 follow-ups drafted." in out
    assert "1 set aside for staff: the evidence was too weak to act on." in out
    # The bounce is of a member's invitation: the member is unreachable, no target failed.
    assert (
        "Message 3 (bounce) accepted; 1 letter(s) marked unreachable (the member's invitation came back)."
        in out
    )
    assert "  follow-ups: drafted 1\n" in out
    assert "1 sent, 0 to retry later, 0 failed." in out
    # Flood control: 46 letters to the Secretary of State (England only), all merged from one template, at most 2 a day.
    assert (
        "warning: Secretary of State for Education would get about 46 of its 46 letter(s) more than 90% "
        "the same text (" in out
    )
    assert "50 sent, 0 to retry later, 0 failed.\n1 letter(s) held by their target's daily cap" in out
    # The pledge wave: two answers recorded by staff, counted in all and per region.
    assert "  pledged: 1, declined: 1, no answer: " in out
    assert "REGION                                    PLEDGED  DECLINED  NO ANSWER\n" in out
    outbox = list((tmp_path / "demo" / "outbox").glob("*.eml"))
    # Invitations of the seven waves (MPs 40, employers 33, Secretary of State 46, JCNC 3,
    # escalation 1, pledge 46, inspectors 3), the eight letters that went (MPs 2, employers 3,
    # Secretary of State 2 with the third held by the cap, inspectors 1) and their receipts, and
    # two follow-up invitations (a supportive reply, and the refusal staff matched by hand).
    assert len(outbox) == 172 + 8 + 8 + 2
    assert len([p for p in outbox if "-invitation-" in p.name]) == 172
    assert len([p for p in outbox if "follow_up_invitation" in p.name]) == 2
    # The one letter due on paper: its member posts it themselves (their council has no email).
    assert len(list((tmp_path / "demo" / "pdfs").glob("*.pdf"))) == 1
    # Its page, then the two pages of the risk-assessment framework the employer wave attaches.
    assert "Printed 1 letter (3 pages) to " in out
    framework = (ROOT / "data" / "risk-assessment-framework.pdf").read_bytes()
    for path in [p for p in outbox if "-letter-" in p.name]:
        message = message_from_bytes(path.read_bytes(), policy=default)
        employer = "protecting school leaders and their teams" in message["Subject"]
        attached = [(a.get_filename(), a.get_content()) for a in message.iter_attachments()]
        assert attached == ([("risk-assessment-framework.pdf", framework)] if employer else [])
    assert (tmp_path / "demo" / "preview.pdf").read_bytes().startswith(b"%PDF")
    # It ends with a staff login and where to use it.
    assert "Added organiser@union.example (organiser)" in out
    assert out.rstrip().splitlines()[-2:] == [
        "Run 'make serve', open http://127.0.0.1:8000/staff/ and sign in as organiser@union.example",
        "with the password demo-organiser-password: the waves, their letters, Replies to sort, Members.",
    ]
    # One forwarded reply is left for staff to sort in the browser, with its letter suggested.
    assert "1 stored (1 reply); 0 already stored." in out
    catherine = re.search(r"campaign replies match 5 (\S+)\s+# Harriet Alden MP, member M100003", out)
    assert catherine is not None


def test_templates_are_found_from_any_folder_and_a_custom_letter_gets_the_default_layout(
    cli, tmp_path, monkeypatch
):
    from conftest import ROOT

    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no templates/ here
    named = cli(
        "wave",
        "create",
        "By name",
        "--target",
        "mp",
        "--letter",
        "mp-inspection",
        "--invite",
        "invitation",
        env={"CAMPAIGN_TEMPLATES": None},
    )
    assert named.exit_code == 0, named.output
    custom = elsewhere / "my-letter.txt"
    custom.write_text((ROOT / "templates" / "letters" / "mp-inspection.txt").read_text())
    own = cli(
        "wave",
        "create",
        "Own letter",
        "--target",
        "mp",
        "--letter",
        str(custom),
        "--invite",
        "invitation",
        env={"CAMPAIGN_TEMPLATES": None},
    )
    # Creating checks every template, the layout included: no layout.html sits beside my-letter.txt.
    assert own.exit_code == 0, own.output
    shown = cli("wave", "show", "Own letter", "--json", env={"CAMPAIGN_TEMPLATES": None})
    assert json.loads(shown.output)["letter_template"] == str(custom)
