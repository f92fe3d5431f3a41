"""How commands print: tables, JSON (streamed for long lists) and progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import click


class Progress:
    """A progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str):
        self.label = label
        self.enabled = sys.stderr.isatty()
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled and total:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self._bar.__enter__()

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def echo_json_array(items: Iterable[Any]) -> None:
    """Stream a JSON array item by item, so a 450,000-member list never sits in memory."""
    click.echo("[", nl=False)
    for i, item in enumerate(items):
        click.echo(("," if i else "") + "\n" + json.dumps(item, default=str, ensure_ascii=False), nl=False)
    click.echo("\n]")


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
