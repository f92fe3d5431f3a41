"""`campaign letters …` and `campaign links reissue`: members' letters, their links and choices."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import App, UserError, main, pass_app
from engine.cli.output import Progress, echo_csv, echo_json_array, echo_table
from engine.errors import CampaignError
from engine.letters.confirm import letter_for_member, not_for_me, send_for_me, sent_myself
from engine.letters.documents import iter_letters
from engine.letters.link_secret import reissue_links
from engine.letters.links import letter_link, link_token
from engine.letters.pledges import answer_pledge, is_pledge
from engine.letters.renewal import renew_link
from engine.store.models import LETTER_STATES, STATE_MEANINGS
from engine.store.states import undo_decision

# How `letters decide` names each decision it can take back.
_CHOICES = {"queued": "send (not yet sent)", "self_sent": "self", "opted_out": "opt-out"}

_kind_option = click.option(
    "--kind",
    type=click.Choice(["letter", "follow-up", "chaser"]),
    default="letter",
    show_default=True,
    help="Which of the member's letters in the wave.",
)


@main.group()
def letters() -> None:
    """Look at letters."""


def _states_in_help(f):
    """Put every state and what it means into a command's help, where it says {states}."""
    lines = "\n".join(f"      {state:<12} {STATE_MEANINGS[state]}" for state in LETTER_STATES)
    f.__doc__ = f.__doc__.replace("{states}", lines)
    return f


_LETTER_CSV_COLUMNS = [
    "reference", "wave", "kind", "state", "membership_no", "member", "target_name", "target_email", "subject",
    "sent_at", "replied_at",
]  # fmt: skip


@letters.command("list")
@_states_in_help
@click.option("--wave", "wave_name", metavar="NAME", help="Only this wave's letters.")
@click.option(
    "--state",
    type=click.Choice(LETTER_STATES),
    help="Only letters in this state. bounced: the letter to the target bounced (we cannot reach the "
    "MP or employer); unreachable: the member's invitation bounced (we cannot reach the member, and "
    "the letter never went).",
)
@click.option(
    "--kind",
    type=click.Choice(["letter", "follow-up", "chaser"]),
    help="Only first letters, follow-ups or chasers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV for a spreadsheet (formulas neutralised).")
@pass_app
def letters_list(
    app: App, wave_name: str | None, state: str | None, kind: str | None, as_json: bool, as_csv: bool
) -> None:
    """List letters: reference, member, target, state and subject.

        \b
        States:
    {states}
        \b
        Examples:
          campaign letters list --wave "MPs autumn" --state drafted
          campaign letters list --state unreachable     # members to reach another way
    """
    rows = iter_letters(
        app.engine(), wave=wave_name, state=state, kind=kind.replace("-", "_") if kind else None
    )
    if as_json:
        echo_json_array(rows)
        return
    if as_csv:
        echo_csv(rows, _LETTER_CSV_COLUMNS)
        return
    count = echo_table(
        rows,
        [
            ("reference", "REF", 11),
            ("membership_no", "MEMBER", 8),
            ("member", "NAME", 20),
            ("target_name", "TO", 26),
            ("target_email", "EMAIL", 30),
            ("state", "STATE", 11),
            ("kind", "KIND", 9),
            ("subject", "SUBJECT", 40),
        ],
    )
    click.echo(f"{count} letter(s).", err=True)


@letters.command("link")
@click.argument("wave_name", metavar="WAVE")
@click.argument("membership_no", metavar="MEMBER")
@_kind_option
@click.option(
    "--renew",
    is_flag=True,
    help="Make the link work again, for the wave's link days from now (letters not yet decided).",
)
@pass_app
def letters_link(app: App, wave_name: str, membership_no: str, kind: str, renew: bool) -> None:
    """Print a member's personal link for a wave (to help them by phone, or to test the pages).

    The link opens all the member's letters in the wave: the first letter, its
    follow-up and its reminder. With --renew, a link that ran out works again.

    \b
    Examples:
      campaign letters link "MPs autumn" M100001
      campaign letters link "MPs autumn" M100001 --renew
    """
    secret = app.require_secret()
    engine = app.engine()
    found = letter_for_member(engine, wave_name, membership_no, kind.replace("-", "_"))
    nonce = found.letter["merge_snapshot"].get("page_nonce") or found.letter["link_nonce"]
    click.echo(letter_link(app.settings.base_url, link_token(secret, nonce)))
    if renew:
        renewal = renew_link(engine, found)
        if renewal.expires_at is None:
            click.echo(
                f"{membership_no} has decided on every letter in this wave: the link stays good for looking.",
                err=True,
            )
        else:
            click.echo(
                f"Renewed: the link works until {renewal.expires_at:%d %B %Y %H:%M} UTC "
                f"(letter(s) {', '.join(renewal.references)}).",
                err=True,
            )


@letters.command("decide")
@click.argument("wave_name", metavar="WAVE")
@click.argument("membership_no", metavar="MEMBER")
@click.argument("choice", type=click.Choice(["send", "self", "opt-out", "pledge", "decline"]), required=False)
@click.option(
    "--text-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The member's edited letter (default: the letter as drafted).",
)
@click.option("--address", help="The member's home address, lines separated by | (MP letters).")
@click.option(
    "--undo",
    is_flag=True,
    help="Take back a decision made by mistake (opted out, sent it myself, or send-for-me not yet "
    "sent): the letter is invited again, with the member's words kept.",
)
@_kind_option
@pass_app
def letters_decide(
    app: App,
    wave_name: str,
    membership_no: str,
    choice: str | None,
    text_file: Path | None,
    address: str | None,
    undo: bool,
    kind: str,
) -> None:
    """Record a member's choice for them, exactly as their page would: send for me, sent myself, or opt
    out; or, with --undo, take back a choice made by mistake. In a pledge wave: pledge or decline
    (given again, it changes their answer).

    A letter already sent to its target cannot be taken back. A send-for-me
    waiting in the outbox is removed from it.

    \b
    Examples:
      campaign letters decide "MPs autumn" M100003 send --text-file edited.txt \\
          --address "1 High St|Leeds|LS1 1AA"
      campaign letters decide "MPs autumn" M100004 opt-out
      campaign letters decide "MPs autumn" M100004 --undo
      campaign letters decide "Signage pledge" M100005 pledge
    """
    engine = app.engine()
    if undo:
        if choice or text_file or address is not None:
            raise UserError("--undo takes no choice, --text-file or --address: it only takes one back")
        found = letter_for_member(engine, wave_name, membership_no, kind.replace("-", "_"))
        with engine.begin() as conn:
            done = undo_decision(conn, found.letter)
        click.echo(
            f"{membership_no}: {_CHOICES[done['undone']]} taken back for letter {done['reference']}; "
            "it is invited again, with the member's words kept."
        )
        if found.expired():
            click.echo(
                f"Their link expired on {found.letter['token_expires_at']:%d %B %Y}: record their new "
                "choice with `campaign letters decide`.",
                err=True,
            )
        return
    if choice is None:
        raise UserError("give the member's choice (send, self or opt-out; pledge or decline), or --undo")
    found = letter_for_member(engine, wave_name, membership_no, kind.replace("-", "_"))
    if is_pledge(found) != (choice in ("pledge", "decline")):
        if is_pledge(found):
            raise UserError(f"wave {wave_name!r} is a pledge wave: the member's choice is pledge or decline")
        raise UserError(f"wave {wave_name!r} is not a pledge wave: pledge and decline are for pledge waves")
    if choice in ("pledge", "decline"):
        if text_file or address is not None:
            raise UserError("a pledge takes no --text-file or --address: there is no letter")
        if not answer_pledge(engine, found, choice == "pledge"):
            click.echo(f"{membership_no}: already {found.letter['state']}; nothing changed.")
            return
        click.echo(f"{membership_no}: {found.letter['state']} (reference {found.letter['reference']}).")
        return
    text = text_file.read_text(encoding="utf-8") if text_file else found.text
    if address is not None:
        address = "\n".join(part.strip() for part in address.split("|"))
    elif found.needs_address:
        address = found.letter["sender_address"] or found.member["address"]
    if choice == "send":
        done = send_for_me(engine, app.settings, found, text, address)
    elif choice == "self":
        done = sent_myself(engine, found, text)
    else:
        done = not_for_me(engine, found)
    if not done:
        raise CampaignError(f"{membership_no} had already decided: the letter is {found.letter['state']}")
    click.echo(f"{membership_no}: {choice} recorded for letter {found.letter['reference']}.")


@main.group()
def links() -> None:
    """Members' personal links and the secret that signs them."""


@links.command("reissue")
@click.option("--yes", is_flag=True, help="Do it (without it, only count the letters that would change).")
@pass_app
def links_reissue(app: App, yes: bool) -> None:
    """Give every letter the link the current secret makes, after rotating the secret or upgrading.

    The links already sent (letters, unsubscribe, questionnaire answers) stop
    working; `campaign letters link` prints a member's new one, and
    `campaign wave reinvite` emails undecided members theirs.

    \b
    Example:
      campaign links reissue --yes
    """
    app.require_secret(check_links=False)
    with Progress("Checking links") as bar:
        changed = reissue_links(app.engine(), app.settings, apply=yes, progress=bar.update)
    origin = app.settings.secret_origin
    if not changed:
        click.echo(f"Every letter's link is already made with the secret from {origin}.")
    elif not yes:
        click.echo(
            f"{changed} letter(s) would get a new link made with the secret from {origin}, "
            "and their old links would stop working. To do it: campaign links reissue --yes"
        )
    else:
        click.echo(
            f"{changed} letter(s) have a new link; their old links no longer work. "
            "Next: campaign wave reinvite WAVE, to email members who have not acted yet their new link."
        )
