"""The command line: one module per command group, each a thin layer over one stage.

`main` is the click group (engine/cli/app.py); importing the command modules here
registers their commands on it, so no module imports this package's top back.
"""

from engine.cli import doctor, letters, lookup, members, replies, report, send, users, waves  # noqa: F401  (registers commands)
from engine.cli.app import main

__all__ = ["main"]
