"""`python -m engine …` runs the `campaign` command."""

from engine.cli.app import main

main()
