"""Progress bars: long commands show one on a terminal, and none when piped or with --json."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SECRET
from test_waves import EMPLOYER_WAVE, SETTINGS, load_sample

from engine.letters.confirm import letter_for_member, sent_myself
from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.store.db import init_db, open_engine

CAMPAIGN = str(Path(sys.executable).parent / "campaign")


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> str:
    """The sample's employer wave launched on a SQLite file, its invitations queued, and two
    letters due on paper; the commands run as separate processes, as a person runs them."""
    tmp = tmp_path_factory.mktemp("progress")
    url = f"sqlite:///{tmp}/progress.db"
    engine = open_engine(url)
    init_db(engine)
    load_sample(engine, tmp)
    create_wave(engine, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(engine, "Employers", SETTINGS)
    for member in ("M100018", "M100020"):
        assert sent_myself(engine, letter_for_member(engine, "Employers", member), None)
    engine.dispose()
    return url


def run(url: str, *args: str, terminal: bool, tmp_path: Path) -> tuple[int, str, str]:
    """Run `campaign` with stdout piped and stderr on a pseudo-terminal (or piped too);
    returns (exit status, stdout, what reached stderr)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CAMPAIGN_", "SMTP_"))},
        "CAMPAIGN_SECRET": TEST_SECRET,
        "CAMPAIGN_TEMPLATES": str(ROOT / "templates"),
        "CAMPAIGN_OUTBOX_DIR": str(tmp_path / "sent"),
    }
    command = [CAMPAIGN, "--db", url, *args]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        return done.returncode, done.stdout, done.stderr
    controller, terminal_end = pty.openpty()
    with open(tmp_path / "stdout", "w+") as stdout:
        process = subprocess.Popen(
            command, env=env, stdout=stdout, stderr=terminal_end, stdin=subprocess.DEVNULL
        )
        os.close(terminal_end)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closes when the process ends
                break
            if not chunk:
                break
            seen += chunk
        os.close(controller)
        status = process.wait(timeout=120)
        stdout.seek(0)
        return status, stdout.read(), seen.decode()


def test_wave_pdf_shows_a_progress_bar_on_a_terminal_only(launched, tmp_path):
    status, out, err = run(
        launched, "wave", "pdf", "Employers", "--out", str(tmp_path / "a"), terminal=True, tmp_path=tmp_path
    )
    assert status == 0, err
    assert "Printing letters" in err and "2/2" in err and "#" in err
    assert out.startswith("Printed 2 letters (2 pages)") and "Printing" not in out
    status, out, err = run(
        launched, "wave", "pdf", "Employers", "--out", str(tmp_path / "b"), terminal=False, tmp_path=tmp_path
    )
    assert (status, err) == (0, "")
    assert out.startswith("Printed 2 letters (2 pages)")
    status, out, err = run(
        launched,
        "wave",
        "pdf",
        "Employers",
        "--out",
        str(tmp_path / "c"),
        "--json",
        terminal=True,
        tmp_path=tmp_path,
    )
    assert (status, err) == (0, "")
    assert json.loads(out)["letters"] == 2


def test_outbox_export_and_send_show_a_progress_bar_on_a_terminal_only(launched, tmp_path):
    status, out, err = run(
        launched, "outbox", "export", str(tmp_path / "check"), terminal=True, tmp_path=tmp_path
    )
    assert status == 0, err
    queued = len(list((tmp_path / "check").glob("*.eml")))
    assert queued > 20
    assert "Writing messages" in err and f"{queued}/{queued}" in err
    status, out, err = run(
        launched, "outbox", "export", str(tmp_path / "again"), "--json", terminal=True, tmp_path=tmp_path
    )
    assert (status, err) == (0, "")
    assert json.loads(out)["messages"] == queued
    status, out, err = run(
        launched, "send", "--once", "--rate", "1000", "--limit", "5", terminal=False, tmp_path=tmp_path
    )
    assert status == 0 and "Sending to" in err and "#" not in err
    status, out, err = run(launched, "send", "--once", "--rate", "1000", terminal=True, tmp_path=tmp_path)
    assert status == 0, err
    assert out.startswith(f"{queued - 5} sent")
    assert f"{queued - 5}/{queued - 5}" in err and "#" in err
