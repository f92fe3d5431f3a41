"""`campaign reps|schools|employers|postcodes …` and `campaign resolve`: who each member writes to."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import App, UserError, main, pass_app
from engine.cli.output import Progress, echo_json, echo_table
from engine.errors import CampaignError
from engine.lookup.employers import employer_gaps, import_contacts
from engine.lookup.parliament import MembersAPI
from engine.lookup.postcode_cache import load_cache_file
from engine.lookup.postcodes_io import PostcodesIO
from engine.lookup.reps import fetch_mps, import_mps, list_mps
from engine.lookup.resolve import ResolveSummary, resolve_members
from engine.lookup.schools import import_schools


@main.group()
def reps() -> None:
    """Load MPs: from a CSV, or from the UK Parliament Members API."""


@reps.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--encoding", help="Force the file's encoding.")
@pass_app
def reps_import(app: App, file: Path, encoding: str | None) -> None:
    """Import an MP list: constituency code, constituency name, MP name, party, email, address as.

    A row with no MP name records a vacant seat.

    \b
    Example:
      campaign reps import data/mps.csv
    """
    result = import_mps(app.engine(), file, encoding=encoding)
    click.echo(f"{file}: {result.mps} MP(s), {result.vacant} vacant seat(s).")


@reps.command("fetch")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def reps_fetch(app: App, as_json: bool) -> None:
    """Fetch the MP of every constituency members live in from the Parliament Members API.

    Run after `campaign resolve` has looked up members' postcodes.

    \b
    Example:
      campaign reps fetch
    """
    api = MembersAPI(app.client("Members API", app.settings.members_api_url))
    engine = app.engine()
    with Progress("Fetching MPs") as bar:
        result = fetch_mps(engine, api, progress=bar.update)
    if as_json:
        echo_json(result.__dict__)
    else:
        click.echo(
            f"{result.mps} MP(s) and {result.vacant} vacant seat(s) fetched for "
            f"{result.constituencies} constituencies ({result.requests} requests)."
        )
        for seat in result.not_found:
            click.echo(f"not found in the Members API: {seat}", err=True)
    if result.stopped:
        raise CampaignError(f"{result.stopped}; what was fetched is kept: re-run to finish")


@reps.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
def reps_list(app: App, as_json: bool) -> None:
    """List the MPs on record.

    \b
    Example:
      campaign reps list --json
    """
    rows = list_mps(app.engine())
    if as_json:
        echo_json(rows)
        return
    echo_table(
        ({**r, "name": r["name"] or "(vacant)"} for r in rows),
        [
            ("constituency_code", "CODE", 9),
            ("constituency_name", "CONSTITUENCY", 32),
            ("name", "MP", 26),
            ("party", "PARTY", 16),
            ("email", "EMAIL", 36),
        ],
    )


# ---- schools and employers -------------------------------------------------


@main.group()
def schools() -> None:
    """Load schools from the DfE GIAS extract."""


@schools.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--encoding", help="Force the file's encoding (default: Windows-1252, as GIAS ships).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def schools_import(app: App, file: Path, encoding: str | None, as_json: bool) -> None:
    """Import edubasealldata.csv and work out each school's employer.

    \b
    Example:
      campaign schools import data/edubasealldata.csv
    """
    with Progress("Importing schools") as bar:
        result = import_schools(
            app.engine(), file, encoding=encoding, progress=bar.update, on_start=bar.start
        )
    if as_json:
        echo_json(result.__dict__)
        return
    kinds = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in sorted(result.by_employer_kind.items()))
    click.echo(f"{file}: {result.schools} schools ({result.closed} closed). Employer: {kinds or 'none'}.")
    if result.flagged:
        flagged = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in sorted(result.flagged.items()))
        click.echo(f"No employer from GIAS (flagged, not guessed): {flagged}.")


@main.group()
def employers() -> None:
    """The union's employer contact directory."""


@employers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--encoding", help="Force the file's encoding.")
@pass_app
def employers_import(app: App, file: Path, encoding: str | None) -> None:
    """Import employer contacts: employer key, name, kind, email, postal address, salutation.

    Keys are those `resolve` gives employers: la:<LA code>, gb:<URN>, trust:<trust code>.

    \b
    Example:
      campaign employers import data/employer-contacts.csv
    """
    result = import_contacts(app.engine(), file, encoding=encoding)
    click.echo(
        f"{file}: {result.contacts} employer contact(s), {result.without_email} with a postal address only."
    )


@employers.command("gaps")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
def employers_gaps(app: App, as_json: bool) -> None:
    """List employers that have members but no contact, largest first.

    \b
    Example:
      campaign employers gaps
    """
    rows = employer_gaps(app.engine())
    if as_json:
        echo_json(rows)
        return
    echo_table(rows, [("members", "MEMBERS", 7), ("employer_key", "KEY", 16), ("name", "EMPLOYER", 50)])
    click.echo(f"{len(rows)} employer(s) without a contact.", err=True)


# ---- postcodes and resolve -------------------------------------------------


@main.group()
def postcodes() -> None:
    """The cache of postcodes.io answers."""


@postcodes.command("load")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def postcodes_load(app: App, file: Path) -> None:
    """Load recorded postcodes.io bulk replies into the cache, to resolve offline.

    \b
    Example:
      campaign postcodes load data/postcodes.json
    """
    stored, unknown = load_cache_file(app.engine(), file)
    click.echo(f"{file}: {stored} postcode(s) cached; {unknown} unknown left to ask online.")


_MP_LABELS = {
    "resolved": "resolved",
    "bad_postcode": "bad postcode",
    "terminated": "terminated",
    "not_found": "not found",
    "no_mp": "no MP",
    "pending": "network unavailable",
}
_EMPLOYER_LABELS = {
    "resolved": "resolved",
    "unknown_urn": "unknown URN",
    "closed": "closed school",
    "independent": "independent",
    "no_trust": "no trust named",
    "not_covered": "no rule for type",
    "no_employer": "no school (no employer)",
    "pending": "pending",
}


def _counts(counts: dict[str, int], labels: dict[str, str]) -> str:
    return ", ".join(
        f"{label} {counts.get(key, 0)}"
        for key, label in labels.items()
        if key == "resolved" or counts.get(key)
    )


def print_resolve_summary(summary: ResolveSummary) -> None:
    labels = dict(_MP_LABELS)
    if summary.network == "offline":
        labels["pending"] = "not looked up (offline)"
    click.echo(f"Members: {summary.members}")
    click.echo(f"MP:       {_counts(summary.mp, labels)}")
    click.echo(f"Employer: {_counts(summary.employer, _EMPLOYER_LABELS)}")
    if summary.network == "online":
        click.echo(
            f"postcodes.io: {summary.postcodes_asked} postcode(s) asked in {summary.requests} request(s)."
        )
    pending = summary.mp.get("pending", 0)
    if summary.network == "unavailable":
        click.echo(
            f"{summary.network_message}: {pending} member(s) marked to look up on the next run, "
            "members already cached stay resolved; re-run `campaign resolve` to finish."
        )
    elif summary.network == "offline" and pending:
        click.echo(f"Offline: {pending} member(s) have uncached postcodes and wait for a run with network.")
    if summary.employers_without_contact:
        click.echo(
            f"{summary.employers_without_contact} employer(s) have members but no contact: "
            "see `campaign employers gaps`."
        )


@main.command()
@click.option("--offline", is_flag=True, help="Use only cached postcodes; ask no service.")
@click.option("--refresh", is_flag=True, help="Ask postcodes.io again about every postcode.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_app
def resolve(app: App, offline: bool, refresh: bool, as_json: bool) -> None:
    """Resolve every member to their constituency, MP and employer.

    Postcodes are asked of postcodes.io once each, in bulk, and cached.

    \b
    Example:
      campaign resolve
      campaign resolve --offline --json
    """
    if offline and refresh:
        raise UserError("--offline and --refresh cannot be used together")
    engine = app.engine()
    client = None if offline else PostcodesIO(app.client("postcodes.io", app.settings.postcodes_io_url))
    with Progress("Looking up postcodes") as bar:
        summary = resolve_members(
            engine,
            client,
            refresh=refresh,
            concurrency=app.settings.http_concurrency,
            progress=bar.update,
            on_start=bar.start,
        )
    if as_json:
        echo_json(summary.as_dict())
    else:
        print_resolve_summary(summary)
