"""The link secret: no default, its key file, commands that refuse to run without it, and new
links (and invitations) after it is rotated."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import replace

import pytest
import requests
from click.testing import CliRunner
from conftest import DATA, ROOT, TEST_SECRET, Cli
from smtp_server import free_port
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401
from test_web import Site

from engine.cli import main
from engine.errors import CampaignError
from engine.letters.confirm import letter_for_member, letter_for_token, sent_myself
from engine.letters.launch import launch_wave
from engine.letters.links import link_token, unsubscribe_link
from engine.letters.waves import create_wave
from engine.mail.outbox import parse_message
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.members.importer import set_mail_opt_out
from engine.settings import Settings
from engine.store.db import init_db, open_engine

NO_SECRET: dict[str, str | None] = {"CAMPAIGN_SECRET": None, "CAMPAIGN_SECRET_FILE": None}
ROTATED = {"CAMPAIGN_SECRET": "a-new-secret-after-rotating-4Nf8Qs2Lw9XcT"}


def no_secret_error(key_file: object) -> str:
    return (
        f"Error: CAMPAIGN_SECRET: not set, and there is no key file {key_file}: run `campaign init` "
        "to create it (or set CAMPAIGN_SECRET to 32 or more random characters)\n"
    )


def key_file(db_url: str, tmp_path) -> str:
    """Where the secret is looked for when nothing says: beside SQLite, else the current folder."""
    return f"{tmp_path}/campaign.db.key" if db_url.startswith("sqlite") else f"{tmp_path}/campaign.key"


def test_there_is_no_default_secret(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings().secret is None
    settings = Settings.from_env({})
    assert settings.secret is None
    with pytest.raises(CampaignError) as missing:
        settings.require_secret()
    assert f"Error: {missing.value}\n" == no_secret_error("campaign.db.key")  # beside sqlite:///campaign.db
    assert Settings.from_env({"CAMPAIGN_SECRET": TEST_SECRET}).require_secret() == TEST_SECRET


COMMANDS_THAT_MAKE_LINKS = [
    ("send", "--once"),
    ("wave", "launch", "MPs"),
    ("wave", "preview", "MPs"),
    ("wave", "reinvite", "MPs"),
    ("outbox", "export", "out"),
    ("letters", "link", "MPs", "M100001"),
    ("chase",),
    ("replies", "ingest", "--eml", str(DATA / "replies")),
    ("replies", "match", "1", "K7M2Q-9XH4T"),
    ("replies", "accept", "1"),
    ("replies", "log", "K7M2Q-9XH4T", "--received", "2026-11-20"),
    ("links", "reissue"),
]


@pytest.mark.parametrize("command", COMMANDS_THAT_MAKE_LINKS, ids=" ".join)
def test_commands_that_make_links_refuse_to_run_without_a_secret(cli, db_url, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = cli(*command, env=NO_SECRET)
    assert result.exit_code == 2
    assert result.stderr == no_secret_error(key_file(db_url, tmp_path))
    assert not (tmp_path / "out").exists()


def test_serve_refuses_to_start_without_a_secret(tmp_path):
    url = f"sqlite:///{tmp_path}/campaign.db"
    engine = open_engine(url)
    init_db(engine)
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if k not in NO_SECRET}
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--db", url, "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == no_secret_error(tmp_path / "campaign.db.key")


def test_commands_that_make_no_links_work_without_a_secret(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps = [
        (
            "members",
            "import",
            str(DATA / "members.csv"),
            "--skip-invalid",
            "--rejects",
            str(tmp_path / "r.csv"),
        ),
        ("schools", "import", str(DATA / "edubasealldata.csv")),
        ("reps", "import", str(DATA / "mps.csv")),
        ("postcodes", "load", str(DATA / "postcodes.json")),
        ("resolve", "--offline"),
        ("members", "list", "--limit", "1"),
        ("wave", "create", "MPs", "--target", "mp", "--letter", "mp-inspection", "--invite", "invitation"),
        ("replies", "list"),
    ]
    for step in steps:
        result = cli(*step, env={**NO_SECRET, "CAMPAIGN_TEMPLATES": str(ROOT / "templates")})
        assert result.exit_code == 0, (step, result.output)
    assert "MP:       resolved 51" in cli("resolve", "--offline", env=NO_SECRET).stdout


def test_a_short_secret_is_refused_naming_where_it_came_from(cli, tmp_path):
    short = cli("members", "list", env={"CAMPAIGN_SECRET": "only-twenty-six-characters"})
    assert short.exit_code == 2
    assert short.stderr == (
        "Error: CAMPAIGN_SECRET: the link secret has 26 characters and needs at least 32 random ones "
        "(make one with python3 -c 'import secrets; print(secrets.token_urlsafe(48))')\n"
    )
    key = tmp_path / "short.key"
    key.write_text("changeme\n")
    from_file = cli("members", "list", env={"CAMPAIGN_SECRET": None, "CAMPAIGN_SECRET_FILE": str(key)})
    assert from_file.exit_code == 2
    assert from_file.stderr.startswith(
        f"Error: {key}: the link secret has 8 characters and needs at least 32"
    )


def test_init_creates_a_private_key_file_beside_the_database_once(tmp_path):
    url = f"sqlite:///{tmp_path}/campaign.db"
    runner = CliRunner()
    first = runner.invoke(main, ["--db", url, "init"], env=NO_SECRET)
    key = tmp_path / "campaign.db.key"
    assert first.exit_code == 0, first.output
    assert (
        f"Created the link secret {key} (readable by you only): back it up, apart from the database.\n"
        in (first.stdout)
    )
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = key.read_text().strip()
    assert len(secret) >= 64
    second = runner.invoke(main, ["--db", url, "init"], env=NO_SECRET)
    assert second.exit_code == 0
    assert f"Link secret: {key}.\n" in second.stdout
    assert key.read_text().strip() == secret
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # Every later command finds it there; CAMPAIGN_SECRET still wins.
    assert Settings.from_env({"CAMPAIGN_DB": url}).secret == secret
    assert Settings.from_env({"CAMPAIGN_DB": url, "CAMPAIGN_SECRET": TEST_SECRET}).secret == TEST_SECRET
    # A database elsewhere gets its own secret.
    other = runner.invoke(main, ["--db", f"sqlite:///{tmp_path}/other.db", "init"], env=NO_SECRET)
    assert other.exit_code == 0
    assert (tmp_path / "other.db.key").read_text().strip() != secret


def test_init_keeps_the_key_in_campaign_secret_file_and_makes_none_with_campaign_secret(cli, tmp_path):
    key = tmp_path / "keys" / "campaign.key"
    key.parent.mkdir()
    first = cli("init", env={"CAMPAIGN_SECRET": None, "CAMPAIGN_SECRET_FILE": str(key)})
    assert f"Created the link secret {key}" in first.stdout
    secret = key.read_text()
    again = cli("init", env={"CAMPAIGN_SECRET": None, "CAMPAIGN_SECRET_FILE": str(key)})
    assert f"Link secret: {key}." in again.stdout
    assert key.read_text() == secret
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    from_env = cli("init")
    assert "Link secret: CAMPAIGN_SECRET." in from_env.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".key") == []


def test_after_rotating_the_secret_links_are_reissued_and_undecided_members_invited_again(
    sample,  # noqa: F811
    db_url,
    tmp_path,
):
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    first = send_outbox(
        sample, SETTINGS, FolderTransport(tmp_path / "first"), rate=10_000, sleep=lambda s: None
    )
    assert first.sent == 40  # the MP letter is for England only
    assert sent_myself(sample, letter_for_member(sample, "MPs", "M100002"), None)
    set_mail_opt_out(sample, "M100003")
    letter = letter_for_member(sample, "MPs", "M100001").letter
    old_token = link_token(SETTINGS.secret, letter["link_nonce"])
    old_unsubscribe = unsubscribe_link("", SETTINGS.secret, letter["reference"], letter["link_nonce"])
    cli = Cli(db_url)

    refused = cli("send", "--once", env=ROTATED)
    assert refused.exit_code == 2
    assert refused.stderr == (
        "Error: CAMPAIGN_SECRET: this database's links were made with another secret (or before this "
        "version): use the secret they were made with, or run `campaign links reissue` to give every "
        "letter a new link (the links already sent then stop working)\n"
    )
    dry = cli("links", "reissue", env=ROTATED)
    assert dry.stdout.startswith(
        "40 letter(s) would get a new link made with the secret from CAMPAIGN_SECRET"
    )
    assert letter_for_token(sample, old_token) is not None  # a dry run changes nothing
    done = cli("links", "reissue", "--yes", env=ROTATED)
    assert done.stdout.startswith("40 letter(s) have a new link; their old links no longer work.")
    again = cli("links", "reissue", env=ROTATED)
    assert again.stdout == "Every letter's link is already made with the secret from CAMPAIGN_SECRET.\n"
    new_link = cli("letters", "link", "MPs", "M100001", env=ROTATED).stdout.strip()
    assert new_link.startswith(f"{SETTINGS.base_url}/l/") and old_token not in new_link

    reinvited = cli("wave", "reinvite", "MPs", "--json", env=ROTATED)
    # 40 letters: one member has sent theirs, one asked for no more campaign mail.
    assert json.loads(reinvited.stdout) == {"queued": 38, "waiting": 0, "expired": 0, "not_emailed": 1}
    twice = cli("wave", "reinvite", "MPs", "--json", env=ROTATED)
    assert json.loads(twice.stdout) == {"queued": 0, "waiting": 38, "expired": 0, "not_emailed": 1}
    second = cli(
        "send", "--once", "--rate", "1000", env={**ROTATED, "CAMPAIGN_OUTBOX_DIR": str(tmp_path / "2")}
    )
    assert "38 sent, 0 to retry later, 0 failed." in second.stdout
    [invitation] = (tmp_path / "2").glob(f"*-invitation-{letter['reference']}.eml")
    message = parse_message(invitation.read_bytes())
    # A Message-ID of its own, naming the letter, so a reply to it still finds the letter.
    assert re.fullmatch(
        rf"<{letter['reference']}\.invitation\.[0-9a-f]{{16}}@union\.example>", message["Message-ID"]
    )
    [first_invitation] = (tmp_path / "first").glob(f"*-invitation-{letter['reference']}.eml")
    assert parse_message(first_invitation.read_bytes())["Message-ID"] != message["Message-ID"]
    text = message.get_body(("plain",)).get_content()
    assert new_link in text and old_token not in text
    preview = cli("wave", "preview", "MPs", "--member", "M100001", env=ROTATED)
    assert preview.exit_code == 0 and new_link in preview.stdout

    with Site(sample, settings=replace(SETTINGS, secret=ROTATED["CAMPAIGN_SECRET"])) as site:
        path = new_link.removeprefix(SETTINGS.base_url)
        assert requests.get(site.base + path, timeout=10).status_code == 200
        assert requests.get(f"{site.base}/l/{old_token}", timeout=10).status_code == 404
        assert requests.post(site.base + old_unsubscribe, timeout=10).status_code == 404
