"""How commands print: tables, JSON and CSV (streamed for long lists) and progress bars."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import click

from engine.members.csvfile import spreadsheet_safe


class Progress:
    """A progress bar on stderr for a command that may run for more than a second.

    Only on a terminal, and never for --json: piped output, logs and scripts see none.
    Give it the total with `start` when it is known; updates before (or without) a
    total show a running count instead. It redraws at most ten times a second.
    """

    def __init__(self, label: str):
        self.label = label
        self.enabled = sys.stderr.isatty() and not _json_output()
        self._bar: Any = None
        self._pending = 0
        self._drawn_at = 0.0

    def start(self, total: int | None) -> None:
        if not self.enabled or self._bar is not None or total == 0:
            return
        if total is not None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
        else:
            # No total: an endless iterable makes click draw a count and a moving mark.
            self._bar = click.progressbar(iter(int, 1), label=self.label, file=sys.stderr, show_pos=True)
        self._bar.__enter__()

    def update(self, n: int = 1) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self.start(None)
        self._pending += n
        now = time.monotonic()
        if now - self._drawn_at >= 0.1:
            self._draw()
            self._drawn_at = now

    def _draw(self) -> None:
        bar = self._bar
        if bar is None or not self._pending:
            return
        if bar.length is not None and bar.pos + self._pending > bar.length:
            bar.length = bar.pos + self._pending  # more work turned up than was counted at the start
        bar.update(self._pending)
        self._pending = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._draw()
            self._bar.__exit__(None, None, None)
            self._bar = None


def _json_output() -> bool:
    """Whether the running command was given --json: every command names that flag `as_json`."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def echo_json_array(items: Iterable[Any]) -> None:
    """Stream a JSON array item by item, so a 450,000-member list never sits in memory."""
    click.echo("[", nl=False)
    for i, item in enumerate(items):
        click.echo(("," if i else "") + "\n" + json.dumps(item, default=str, ensure_ascii=False), nl=False)
    click.echo("\n]")


def echo_csv(rows: Iterable[dict[str, Any]], columns: list[str]) -> int:
    """Stream rows as CSV on stdout (a header line, then one line per row), every cell
    spreadsheet-safe: a value a spreadsheet would run as a formula gets a quote before it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")

    def line(cells: Iterable[object]) -> None:
        writer.writerow([spreadsheet_safe(_cell(c)) for c in cells])
        click.echo(out.getvalue(), nl=False)
        out.seek(0)
        out.truncate()

    line(columns)
    count = 0
    for row in rows:
        line(row.get(c) for c in columns)
        count += 1
    return count


def _cell(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def echo_table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str, int]]) -> int:
    """Print rows as fixed-width columns (key, heading, width); returns the row count."""
    click.echo("  ".join(h.ljust(w) for _, h, w in columns).rstrip())
    count = 0
    for row in rows:
        cells = []
        for key, _, width in columns:
            text = "" if row.get(key) is None else str(row[key])
            cells.append((text[: width - 1] + "…" if len(text) > width else text).ljust(width))
        click.echo("  ".join(cells).rstrip())
        count += 1
    return count
