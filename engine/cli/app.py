"""The `campaign` command group: settings, the database, and one-line errors with their exit status.

Each command group lives in its own module of this package and registers itself on `main`;
engine/cli/__init__.py imports them all, so nothing here imports them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, StatementError

from engine import __version__
from engine.errors import CampaignError, RowErrors
from engine.letters.link_secret import check_links_made_with, ensure_secret
from engine.lookup.http import JsonClient
from engine.settings import Settings
from engine.store.db import (
    check_schema,
    database_error_message,
    database_outage_message,
    init_db,
    open_engine,
)


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
        except OperationalError as exc:
            # A lost connection or a lock held too long: the world, not a bug; like a bad input
            # it is exit status 2, and the next run continues.
            outage = database_outage_message(exc)
            if outage is not None:
                raise UserError(outage) from None
            raise click.ClickException(database_error_message(exc)) from None
        except StatementError as exc:
            # Not the user's input (that is checked before it is stored): the database or the
            # world went wrong. One line, exit status 1, and no SQL or members' data.
            raise click.ClickException(database_error_message(exc)) from None


pass_app = click.make_pass_decorator(App)


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
