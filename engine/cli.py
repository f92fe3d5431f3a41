"""The `campaign` command: parses options, calls one engine function, prints the result.

No business logic lives here; see the modules each command names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import StatementError

from . import __version__
from .db import check_schema, database_error_message, init_db, open_engine
from .employers import employer_gaps, import_contacts
from .errors import CampaignError, RowErrors
from .http import JsonClient
from .link_secret import check_links_made_with, ensure_secret
from .members import get_member, import_members, iter_members
from .models import EMPLOYER_STATUSES, MP_STATUSES
from .parliament import MembersAPI
from .postcode_cache import load_cache_file
from .postcodes_io import PostcodesIO
from .reps import fetch_mps, import_mps, list_mps
from .resolve import ResolveSummary, resolve_members
from .schools import import_schools
from .settings import Settings


class UserError(click.ClickException):
    exit_code = 2


class App:
    """What every command needs: the settings, and the database once asked for."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._engine: Engine | None = None

    def engine(self, *, check: bool = True) -> Engine:
        if self._engine is None:
            self._engine = open_engine(self.settings.db_url)
        if check:
            database = self._engine.url.database
            if self._engine.dialect.name == "sqlite" and database and not Path(database).exists():
                # Connecting would create an empty file; say what to do instead.
                raise CampaignError(f"database {database} does not exist: run `campaign init` first")
            check_schema(self._engine)
        return self._engine

    def require_secret(self, *, check_links: bool = True) -> str:
        """The link secret, for commands that build or check members' links. Refuses without one
        and, with `check_links`, with one the database's existing links were not made with."""
        secret = self.settings.require_secret()
        if check_links:
            check_links_made_with(self.engine(), self.settings)
        return secret

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def client(self, service: str, base_url: str) -> JsonClient:
        s = self.settings
        return JsonClient(
            service, base_url, timeout=s.http_timeout, tries=s.http_tries, backoff=s.http_backoff
        )


class CampaignGroup(click.Group):
    """Turns the engine's errors into one-line messages with the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RowErrors as exc:
            for line in exc.problems:
                click.echo(line, err=True)
            raise UserError(str(exc)) from None
        except CampaignError as exc:
            error = UserError(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except StatementError as exc:
            # Not the user's input (that is checked before it is stored): the database or the
            # world went wrong. One line, exit status 1, and no SQL or members' data.
            raise click.ClickException(database_error_message(exc)) from None


pass_app = click.make_pass_decorator(App)


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


@click.group(cls=CampaignGroup)
@click.option("--db", metavar="URL", help="Database URL (default: $CAMPAIGN_DB or sqlite:///campaign.db).")
@click.version_option(__version__, prog_name="campaign")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """Campaign Engine: letters from members to their MPs and employers.

    \b
    Typical start:
      campaign init
      campaign members import members.csv
      campaign resolve
    """
    try:
        ctx.obj = App(Settings.from_env(db_url=db))
    except CampaignError as exc:
        raise UserError(str(exc)) from None
    ctx.call_on_close(ctx.obj.close)


@main.command()
@pass_app
def init(app: App) -> None:
    """Create the database, or upgrade it to this version keeping all data; create the link secret.

    The secret that signs members' links is CAMPAIGN_SECRET or, when that is
    unset, a key file beside a SQLite database (campaign.db.key), else
    campaign.key here, or CAMPAIGN_SECRET_FILE; init creates the file once
    and never replaces it.

    \b
    Example:
      campaign init
    """
    engine = app.engine(check=False)
    before, after = init_db(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before is None:
        click.echo(f"Created database {where} (schema {after}).")
    elif before == after:
        click.echo(f"Database {where} is up to date (schema {after}).")
    else:
        click.echo(f"Upgraded database {where} from schema {before} to {after}.")
    app.settings, created = ensure_secret(app.settings)
    if created:
        click.echo(
            f"Created the link secret {app.settings.secret_file} (readable by you only): "
            "back it up, apart from the database."
        )
    else:
        click.echo(f"Link secret: {app.settings.secret_origin}.")
    try:
        check_links_made_with(engine, app.settings)
    except CampaignError as exc:
        click.echo(f"Warning: {exc}", err=True)


# ---- members ---------------------------------------------------------------


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
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def members_import(
    app: App, file: Path, skip_invalid: bool, rejects: Path | None, encoding: str | None, as_json: bool
) -> None:
    """Import a membership-system CSV export, updating members already known.

    Needs membership_no, first_name, last_name, email, postcode and school_urn;
    other columns are kept as merge fields. A file with bad rows imports
    nothing unless --skip-invalid is given.

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
        )
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"{file}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged, {result.rejected} rejected."
    )
    if result.custom_fields:
        click.echo(f"Extra columns kept as merge fields: {', '.join(result.custom_fields)}.")
    if result.rejects_file:
        click.echo(f"Rejected rows and their reasons: {result.rejects_file}")
    click.echo("Next: campaign resolve")


@members.command("list")
@click.option("--mp-status", type=click.Choice(MP_STATUSES), help="Only members with this MP outcome.")
@click.option(
    "--employer-status", type=click.Choice(EMPLOYER_STATUSES), help="Only members with this employer outcome."
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many members.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of members.")
@pass_app
def members_list(
    app: App, mp_status: str | None, employer_status: str | None, limit: int | None, as_json: bool
) -> None:
    """List members with what `resolve` found for each.

    \b
    Example:
      campaign members list --mp-status terminated
    """
    rows = iter_members(app.engine(), mp_status=mp_status, employer_status=employer_status, limit=limit)
    if as_json:
        echo_json_array(rows)
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


# ---- representatives -------------------------------------------------------


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


# The wave, letter and outbox commands live in their own module and register
# themselves on `main`; importing it last keeps this module free of them.
from . import cli_replies, cli_waves  # noqa: E402, F401
