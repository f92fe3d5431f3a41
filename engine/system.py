"""What this machine must have beyond Python: the system packages PDFs and the tests need.

A missing library otherwise shows up far from its cause (a 500 on a member's PDF
download, a test failing on a library's warning), so each is checked here by the
file the package installs, and named by the Debian/Ubuntu package that brings it.
"""

from __future__ import annotations

import ctypes.util
import functools
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from engine.errors import CampaignError

APT_INSTALL = "sudo apt-get install"


@dataclass(frozen=True)
class Need:
    package: str  # the Debian/Ubuntu package
    why: str
    # Needed for the product, or only to run the tests.
    for_tests: bool = False
    # WeasyPrint works without it today, and says it will not in future.
    optional: bool = False


PDF_LIBRARIES = {
    "pango-1.0": Need("libpango-1.0-0", "printable letters (PDF): text layout"),
    "pangoft2-1.0": Need("libpangoft2-1.0-0", "printable letters (PDF): fonts"),
    "harfbuzz-subset": Need(
        "libharfbuzz-subset0", "printable letters (PDF): fonts subset at a quarter of the CPU", optional=True
    ),
}
FONT = Need("fonts-dejavu-core", "printable letters (PDF): a font with every member's name (Łukasz, Siân)")
FONT_FILE = "DejaVuSerif.ttf"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
TEST_PROGRAMS = {
    "chromium": Need("chromium", "the member-page tests (a real browser)", for_tests=True),
    "dovecot": Need("dovecot-imapd", "the mailbox-reading tests (a real IMAP server)", for_tests=True),
}


def _has_font() -> bool:
    for folder in FONT_DIRS:
        root = Path(folder).expanduser()
        if root.is_dir() and next(root.rglob(FONT_FILE), None) is not None:
            return True
    return False


def _has_program(name: str) -> bool:
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()


def missing(*, tests: bool = False) -> list[Need]:
    """What this machine lacks, required first; with `tests`, what only the tests need too."""
    lacking = [need for lib, need in PDF_LIBRARIES.items() if ctypes.util.find_library(lib) is None]
    if not _has_font():
        lacking.append(FONT)
    if tests:
        lacking += [need for name, need in TEST_PROGRAMS.items() if not _has_program(name)]
    return sorted(lacking, key=lambda need: need.optional)


def install_line(needs: list[Need]) -> str:
    return f"{APT_INSTALL} {' '.join(need.package for need in needs)}"


@functools.cache
def weasyprint() -> ModuleType:
    """WeasyPrint, or one line naming the system package it could not load."""
    lacking = [need for need in missing() if not need.optional and need is not FONT]
    if lacking:
        raise CampaignError(
            f"PDFs cannot be made: this machine lacks the system package {lacking[0].package} "
            f"({install_line(lacking)})"
        )
    # Its warning that a missing optional library will be required one day depends on the
    # machine, not on us: it is not shown to staff or members.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="weasyprint")
        try:
            import weasyprint as module
        except OSError as exc:  # a library found by name but not loadable
            raise CampaignError(f"PDFs cannot be made: a system library failed to load ({exc})") from None
    return module
