"""Regenerate risk-assessment-framework.pdf from its HTML source, beside this script.

Run from the repository root after editing the HTML:

    .venv/bin/python data/make_framework_pdf.py

The PDF is committed, because the demo's employer wave attaches it (`--attach`) and a wave
stores the bytes it was given: regenerating it changes only waves created afterwards.
"""

from __future__ import annotations

from pathlib import Path

from engine import system

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "risk-assessment-framework.html"
TARGET = HERE / "risk-assessment-framework.pdf"


def main() -> None:
    document = system.weasyprint().HTML(filename=str(SOURCE)).render()
    TARGET.write_bytes(document.write_pdf())
    print(f"Wrote {TARGET.relative_to(Path.cwd())} ({len(document.pages)} pages).")


if __name__ == "__main__":
    main()
