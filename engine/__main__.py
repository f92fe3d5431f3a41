"""`python -m engine …` runs the `campaign` command."""

from engine.cli import main

main()
