"""`campaign members …`: importing, listing and showing members, and their mail opt-out."""

from __future__ import annotations

import json
from pathlib import Path

import click

from engine.cli.app import App, main, pass_app
from engine.cli.output import Progress, echo_csv, echo_json, echo_json_array, echo_table
from engine.members.importer import get_member, import_members, iter_members, set_mail_opt_out
from engine.members.rights import export_member, forget_member, purge_messages
from engine.store.files import write_atomically
from engine.store.models import EMPLOYER_STATUS_MEANINGS, EMPLOYER_STATUSES, MP_STATUSES

MEMBER_CSV_COLUMNS = [
    "membership_no", "first_name", "last_name", "email", "postcode", "school_urn", "town", "role", "branch",
    "region", "mp_status", "constituency_code", "constituency_name", "employer_status", "employer_name",
    "mail_opt_out_at", "custom",
]  # fmt: skip


@main.group()
def members() -> None:
    """Import and look at members."""


@members.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="Import the good rows; write bad ones to a rejects CSV.")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where --skip-invalid writes bad rows (default: FILE.rejects.csv beside FILE).",
)
@click.option("--encoding", help="Force the file's encoding (default: UTF-8, else Windows-1252).")
@click.option(
    "--restore",
    is_flag=True,
    help="Bring back members forgotten at their request (only on their new request).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def members_import(
    app: App,
    file: Path,
    skip_invalid: bool,
    rejects: Path | None,
    encoding: str | None,
    restore: bool,
    as_json: bool,
) -> None:
    """Import a membership-system CSV export, updating members already known.

    Needs membership_no, first_name, last_name, email and postcode; school_urn
    is optional (left empty for supply, central and retired staff, who then
    have no employer). Other columns are kept as merge fields. A file with
    bad rows imports nothing unless --skip-invalid is given.

    \b
    Example:
      campaign members import data/members.csv --skip-invalid
    """
    with Progress("Importing members") as bar:
        result = import_members(
            app.engine(),
            file,
            skip_invalid=skip_invalid,
            rejects_path=rejects,
            encoding=encoding,
            progress=bar.update,
            on_start=bar.start,
            restore=restore,
        )
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"{file}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.rejected} rejected."
    )
    if result.forgotten:
        click.echo(
            f"{result.forgotten} row(s) of members forgotten at their request were skipped "
            "(--restore brings them back, on their new request only)."
        )
    if result.restored:
        click.echo(f"{result.restored} member(s) forgotten earlier were brought back (--restore).")
    if result.custom_fields:
        click.echo(f"Extra columns kept as merge fields: {', '.join(result.custom_fields)}.")
    if result.rejects_file:
        click.echo(f"Rejected rows and their reasons: {result.rejects_file}")
    click.echo("Next: campaign resolve")


def _employer_statuses_in_help(f):
    """Put every employer outcome and what it means into the help, where it says {employer_statuses}."""
    # Each line after the first takes the docstring's own indent, so click dedents them all alike.
    lines = "\n      ".join(
        f"{status:<12} {EMPLOYER_STATUS_MEANINGS[status]}" for status in EMPLOYER_STATUSES
    )
    f.__doc__ = f.__doc__.replace("{employer_statuses}", lines)
    return f


@members.command("list")
@_employer_statuses_in_help
@click.option("--mp-status", type=click.Choice(MP_STATUSES), help="Only members with this MP outcome.")
@click.option(
    "--employer-status", type=click.Choice(EMPLOYER_STATUSES), help="Only members with this employer outcome."
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many members.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of members.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV for a spreadsheet (formulas neutralised).")
@pass_app
def members_list(
    app: App,
    mp_status: str | None,
    employer_status: str | None,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List members with what `resolve` found for each.

    \b
    Employer outcomes (--employer-status):
      {employer_statuses}

    \b
    Examples:
      campaign members list --mp-status terminated
      campaign members list --employer-status no_employer   # supply, central and retired staff
    """
    rows = iter_members(app.engine(), mp_status=mp_status, employer_status=employer_status, limit=limit)
    if as_json:
        echo_json_array(rows)
        return
    if as_csv:
        echo_csv(rows, MEMBER_CSV_COLUMNS)
        return
    count = echo_table(
        ({**r, "name": f"{r['first_name']} {r['last_name']}"} for r in rows),
        [
            ("membership_no", "MEMBER", 10),
            ("name", "NAME", 22),
            ("postcode", "POSTCODE", 8),
            ("mp_status", "MP", 12),
            ("constituency_name", "CONSTITUENCY", 26),
            ("employer_status", "EMPLOYER", 11),
            ("employer_name", "EMPLOYER NAME", 30),
        ],
    )
    click.echo(f"{count} member(s).", err=True)


@members.command("show")
@click.argument("membership_no")
@click.option("--json", "as_json", is_flag=True, help="Print the member as JSON.")
@pass_app
def members_show(app: App, membership_no: str, as_json: bool) -> None:
    """Show one member, their merge fields and how they resolved.

    \b
    Example:
      campaign members show M100001
    """
    member = get_member(app.engine(), membership_no)
    if as_json:
        echo_json(member)
        return
    custom = member.pop("custom") or {}
    for key, value in member.items():
        if key != "id":
            click.echo(f"{key + ':':20} {'' if value is None else value}")
    for key, value in custom.items():
        click.echo(f"{'custom.' + key + ':':20} {value}")


@members.command("opt-out")
@click.argument("membership_no")
@click.option("--undo", is_flag=True, help="Take the opt-out back.")
@pass_app
def members_opt_out(app: App, membership_no: str, undo: bool) -> None:
    """Record that a member wants no more campaign mail (or, with --undo, that they do).

    \b
    Example:
      campaign members opt-out M100001
    """
    member = set_mail_opt_out(app.engine(), membership_no, not undo)
    state = "opted out of" if member["mail_opt_out_at"] else "receiving"
    click.echo(f"{membership_no} is {state} campaign mail.")


# ---- data rights ---------------------------------------------------------------


@members.command("export")
@click.argument("membership_no")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON to this file (default: print it).",
)
@pass_app
def members_export(app: App, membership_no: str, out: Path | None) -> None:
    """Everything held about one member, as JSON, for a subject access request: their details,
    letters with every word, the emails sent them, the messages about them, and the events
    that name them.

    \b
    Example:
      campaign members export M100001 --out M100001.json
    """
    data = export_member(app.engine(), membership_no)
    if out is None:
        echo_json(data)
        return
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    write_atomically(out, (text + "\n").encode())
    click.echo(
        f"{out}: {len(data['letters'])} letter(s), {len(data['emails'])} email(s), "
        f"{len(data['messages'])} message(s), {len(data['events'])} event(s)."
    )


@members.command("forget")
@click.argument("membership_no")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print what was erased as JSON.")
@pass_app
def members_forget(app: App, membership_no: str, yes: bool, as_json: bool) -> None:
    """Erase a member's personal data at their request, keeping anonymous counts.

    Their name, addresses, email, postcode, school, merge fields, the words of their letters
    and every message about them are erased; their links stop working and no mail goes to
    them; reports still count their letters. An older import does not bring them back
    (`members import --restore` does, on their new request only). This cannot be undone.

    \b
    Example:
      campaign members forget M100001
    """
    engine = app.engine()
    get_member(engine, membership_no)  # a wrong number is told before anything is asked
    if not yes:
        click.confirm(
            f"Erase every piece of personal data about member {membership_no}? This cannot be undone",
            abort=True,
        )
    result = forget_member(engine, membership_no)
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"{membership_no} forgotten: {result.letters} letter(s) emptied and their links stopped, "
        f"{result.emails_cancelled} queued email(s) cancelled, {result.messages} message(s) erased, "
        f"{result.events} log event(s) scrubbed."
    )


@main.command("purge")
@click.option(
    "--older-than",
    "days",
    type=int,
    help="Days to keep incoming messages whole (default: CAMPAIGN_RETENTION_DAYS, else 365).",
)
@click.option("--dry-run", is_flag=True, help="Say what would go; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def purge(app: App, days: int | None, dry_run: bool, as_json: bool) -> None:
    """Remove the raw bytes, text and attachments of incoming messages past the retention period.

    What each message was (reply, bounce…), its letter, outcome and dates stay, so letter
    states and reports do not change.

    \b
    Example:
      campaign purge --older-than 365 --dry-run
    """
    result = purge_messages(
        app.engine(), days if days is not None else app.settings.retention_days, dry_run=dry_run
    )
    if as_json:
        echo_json(result.as_dict())
        return
    kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(result.by_kind.items())) or "none"
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"Messages received before {result.before[:10]}: {verb} the bodies of {result.messages} "
        f"({kinds}; {result.bytes / 1_000_000:.1f} MB)."
    )


# ---- sending ------------------------------------------------------------------
