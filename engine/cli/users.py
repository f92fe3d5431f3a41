"""`campaign users`: the staff accounts that sign in to the staff pages (/staff/)."""

from __future__ import annotations

import click

from engine.cli.app import App, main, pass_app
from engine.cli.output import echo_json, echo_table
from engine.store.models import STAFF_ROLES
from engine.web.accounts import (
    add_user,
    check_password,
    list_users,
    normalise_staff_email,
    remove_user,
    set_role,
)

_ROLE = click.Choice(list(STAFF_ROLES))


@main.group("users")
def users() -> None:
    """Staff accounts for the staff pages: viewer (reads), staff, organiser (everything)."""


@users.command("add")
@click.argument("email")
@click.option("--role", type=_ROLE, required=True, help="viewer, staff or organiser.")
@click.option(
    "--password",
    help="For scripts only (it stays in the shell's history): without it the password is asked twice.",
)
@pass_app
def users_add(app: App, email: str, role: str, password: str | None) -> None:
    """Create a staff account. The password (12 characters or more) is kept only as an argon2 hash.

    \b
    Examples:
      campaign users add organiser@union.example --role organiser
      campaign users add rep@union.example --role viewer --password "$REP_PASSWORD"
    """
    engine = app.engine()
    normalise_staff_email(email)  # a mistyped address is said before the password is asked
    if password is None:
        password = click.prompt(
            "Password (12 characters or more)",
            hide_input=True,
            confirmation_prompt="Repeat the password",
        )
    check_password(password)
    added = add_user(engine, email, role, password)
    click.echo(
        f"Added {added['email']} ({added['role']}): they sign in at {app.settings.base_url}/staff/login"
    )


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the accounts as JSON.")
@pass_app
def users_list(app: App, as_json: bool) -> None:
    """Every staff account with its role and last sign-in (never a password or its hash).

    \b
    Example:
      campaign users list
    """
    rows = list_users(app.engine())
    if as_json:
        echo_json(rows)
        return
    shown = [
        {
            **row,
            "created": f"{row['created_at']:%Y-%m-%d}",
            "last": f"{row['last_login_at']:%Y-%m-%d %H:%M}" if row["last_login_at"] else "never",
            "state": "disabled" if row["disabled"] else "",
        }
        for row in rows
    ]
    echo_table(
        shown,
        [
            ("email", "EMAIL", 36),
            ("role", "ROLE", 10),
            ("created", "CREATED", 10),
            ("last", "LAST SIGN-IN", 16),
            ("state", "", 8),
        ],  # fmt: skip
    )


@users.command("remove")
@click.argument("email")
@pass_app
def users_remove(app: App, email: str) -> None:
    """Delete a staff account; every browser it is signed in on is signed out at once.

    \b
    Example:
      campaign users remove rep@union.example
    """
    remove_user(app.engine(), email)
    click.echo(f"Removed {normalise_staff_email(email)}.")


@users.command("role")
@click.argument("email")
@click.argument("role", type=_ROLE)
@pass_app
def users_role(app: App, email: str, role: str) -> None:
    """Change a staff account's role; it applies from the user's next page.

    \b
    Example:
      campaign users role rep@union.example staff
    """
    set_role(app.engine(), email, role)
    click.echo(f"{normalise_staff_email(email)} is now {role}.")
