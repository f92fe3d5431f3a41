"""README.md as a new user reads it: its walk-through runs as written, and what it names exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from engine.store.db import head_revision

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(heading: str) -> str:
    start = README.index(f"## {heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_walk_through_runs_as_written_on_the_sample_data(tmp_path):
    blocks = shell_blocks(section("A five-minute walk-through"))
    assert len(blocks) >= 2
    # A fresh checkout after `make demo`: the data the README names, and the virtual environment.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copytree(ROOT / "data", checkout / "data")
    (checkout / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CAMPAIGN_", "SMTP_", "IMAP_", "BOUNCE_"))
    }
    # bash -x echoes each command, so a failure shows which line of the README it was.
    done = subprocess.run(
        ["bash", "-xeuo", "pipefail", "-c", "\n".join(blocks)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"the walk-through failed:\n{done.stderr[-3000:]}"
    # What the walk-through promises: the edited letter went (into the folder), the opt-out did not.
    assert re.search(r"^  sent +1$", done.stdout, flags=re.M), done.stdout
    assert re.search(r"^  opted_out +1$", done.stdout, flags=re.M), done.stdout


def test_every_sample_file_a_readme_command_reads_exists():
    commands = re.findall(r"^\$ (campaign .*)$", README, flags=re.M)
    commands += [line for block in shell_blocks(README) for line in block.splitlines()]
    named = {word for line in commands for word in line.split("#")[0].split() if word.startswith("data/")}
    assert named
    for name in sorted(named):
        assert (ROOT / name).exists(), f"README's commands read {name}, which is not in the checkout"


def test_the_schema_version_the_readme_shows_is_the_newest():
    shown = re.findall(r"\(schema (\d{4})\)", README)
    assert shown, "README shows no schema version"
    assert set(shown) == {head_revision()[:4]}
