"""`campaign doctor`: does this machine have the system packages the campaign needs?"""

from __future__ import annotations

import click

from engine import system
from engine.cli.app import main
from engine.cli.output import echo_json


@main.command()
@click.option(
    "--tests", "for_tests", is_flag=True, help="Also what only the tests need (a browser, an IMAP server)."
)
@click.option("--json", "as_json", is_flag=True, help="Print what is missing as JSON.")
def doctor(for_tests: bool, as_json: bool) -> None:
    """Check the system packages beyond Python: one line for each that is missing.

    Exit status 2 when a required one is missing (with the command that installs
    it on Debian/Ubuntu), 0 otherwise; an optional one is reported, not failed.

    \b
    Example:
      campaign doctor --tests
    """
    lacking = system.missing(tests=for_tests)
    required = [need for need in lacking if not need.optional]
    if as_json:
        echo_json(
            {
                "ok": not required,
                "missing": [
                    {"package": n.package, "for": n.why, "optional": n.optional, "tests_only": n.for_tests}
                    for n in lacking
                ],
                "install": system.install_line(lacking) if lacking else None,
            }
        )
    else:
        for need in lacking:
            kind = "recommended" if need.optional else "missing"
            click.echo(f"{kind}: system package {need.package}, for {need.why}", err=True)
        if lacking:
            click.echo(f"Install with: {system.install_line(lacking)}", err=True)
        else:
            click.echo("This machine has every system package the campaign needs.")
    if required:
        raise SystemExit(2)
