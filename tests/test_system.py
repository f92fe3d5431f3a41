"""The system packages beyond Python: named one line each when missing, never a traceback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from engine import system
from engine.cli import main
from engine.errors import CampaignError
from engine.letters.documents import pdf_bytes


def doctor(*args: str):
    return CliRunner().invoke(main, ["doctor", *args], catch_exceptions=False)


def test_this_machine_has_what_readme_lists():
    # CI installs every package README lists, so here nothing may be missing.
    result = doctor("--tests")
    assert result.exit_code == 0, result.output
    assert result.output == "This machine has every system package the campaign needs.\n"


def test_a_missing_font_is_named_with_the_command_that_installs_it(monkeypatch, tmp_path):
    monkeypatch.setattr(system, "FONT_DIRS", (str(tmp_path),))
    result = doctor()
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "missing: system package fonts-dejavu-core, for printable letters (PDF): a font with every "
        "member's name (Łukasz, Siân)",
        "Install with: sudo apt-get install fonts-dejavu-core",
    ]
    data = json.loads(doctor("--json").stdout)
    assert data["ok"] is False
    assert [need["package"] for need in data["missing"]] == ["fonts-dejavu-core"]


def test_an_optional_library_is_recommended_not_failed(monkeypatch):
    libraries = dict(system.PDF_LIBRARIES)
    libraries["campaign-test-absent"] = system.Need("libcampaign-absent0", "nothing", optional=True)
    monkeypatch.setattr(system, "PDF_LIBRARIES", libraries)
    result = doctor()
    assert result.exit_code == 0
    assert "recommended: system package libcampaign-absent0, for nothing" in result.stderr


def test_a_pdf_without_its_library_is_one_line_naming_the_package(monkeypatch):
    libraries = dict(system.PDF_LIBRARIES)
    libraries["campaign-test-absent"] = system.Need("libcampaign-absent0", "printable letters")
    monkeypatch.setattr(system, "PDF_LIBRARIES", libraries)
    system.weasyprint.cache_clear()
    try:
        with pytest.raises(CampaignError) as raised:
            pdf_bytes(["<html><body>Dear Ms Alden</body></html>"])
    finally:
        system.weasyprint.cache_clear()
    assert str(raised.value) == (
        "PDFs cannot be made: this machine lacks the system package libcampaign-absent0 "
        "(sudo apt-get install libcampaign-absent0)"
    )
