"""`campaign replies …` and `campaign chase`: the organising mailbox and what follows from it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from engine.cli.app import App, main, pass_app
from engine.cli.output import Progress, echo_csv, echo_json, echo_json_array, echo_table
from engine.errors import CampaignError
from engine.followup.chase import chase as run_chase
from engine.inbox.ingest import Ingester
from engine.inbox.sources import EmlSource, ImapSource, MaildirSource, MailSource, MboxSource, parse_imap_url
from engine.inbox.staff import (
    BOUNCED_MESSAGES,
    accept_suggestion,
    dismiss,
    list_messages,
    log_paper_reply,
    match_manually,
    raw_message,
    received_date,
    set_outcome,
    show_message,
    undo_match,
)
from engine.store.models import INBOUND_KINDS, OUTCOMES


@main.group()
def replies() -> None:
    """Read the organising mailbox, match replies to letters, and deal with what is left."""


def _source(
    app: App,
    imap: str | None,
    move_to: str | None,
    mbox: Path | None,
    maildir: Path | None,
    eml: tuple[Path, ...],
) -> MailSource:
    given = [
        name
        for name, value in (("--imap", imap), ("--mbox", mbox), ("--maildir", maildir), ("--eml", eml))
        if value
    ]
    if len(given) != 1:
        raise CampaignError(
            "replies ingest: give exactly one of --imap URL, --mbox FILE, --maildir DIR, --eml PATH…"
        )
    if imap:
        location = parse_imap_url(imap, app.settings.imap_password)
        if not location.password:
            raise CampaignError("--imap: no password: put it in the URL or in IMAP_PASSWORD")
        return ImapSource(location, move_to=move_to, ca_file=app.settings.imap_ca_file)
    if move_to:
        raise CampaignError("--move-to: only for --imap")
    if mbox:
        return MboxSource(mbox)
    if maildir:
        return MaildirSource(maildir)
    return EmlSource(list(eml))


@replies.command("ingest")
@click.option(
    "--imap", metavar="URL", help="imaps://user@host/Folder (password in the URL or IMAP_PASSWORD)."
)
@click.option(
    "--move-to", metavar="FOLDER", help="With --imap: move each message here once stored (else flag it)."
)
@click.option("--mbox", type=click.Path(path_type=Path), help="An mbox file.")
@click.option("--maildir", type=click.Path(path_type=Path), help="A Maildir folder.")
@click.option(
    "--eml",
    type=click.Path(path_type=Path),
    multiple=True,
    help=".eml files or folders of them (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def replies_ingest(app: App, imap, move_to, mbox, maildir, eml, as_json: bool) -> None:
    """Store new incoming mail, classify it, match it to letters and act on it.

    Safe to run from cron: a message already stored is recorded once, and on
    IMAP only messages not yet ingested are read.

    \b
    Examples:
      IMAP_PASSWORD=… campaign replies ingest --imap imaps://organising@mail.example.org/INBOX
      campaign replies ingest --mbox exported.mbox
      campaign replies ingest --eml forwarded/ --eml one-more.eml
    """
    # A matched employer reply drafts a follow-up, with its link, as it is ingested.
    app.require_secret()
    engine = app.engine()
    source = _source(app, imap, move_to, mbox, maildir, eml)
    with Progress("Ingesting") as bar:
        if isinstance(source, EmlSource):
            bar.start(len(source.files))
        result = Ingester(engine, app.settings).ingest(source, progress=bar.update)
    if as_json:
        echo_json(result.as_dict())
    else:
        kinds = (
            ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(result.kinds.items())) or "nothing new"
        )
        click.echo(f"{result.stored} stored ({kinds}); {result.duplicates} already stored.")
        click.echo(
            f"Matched {result.matched} to letters, {result.unmatched} unmatched; "
            f"{result.letters_replied} letters replied, {result.letters_bounced} bounced, "
            + (
                f"{result.members_unreachable} unreachable (the member's invitation bounced), "
                if result.members_unreachable
                else ""
            )
            + f"{result.addresses_suppressed} addresses suppressed, {result.follow_ups} follow-ups drafted."
        )
        if result.triaged:
            click.echo(f"{result.triaged} set aside for staff: the evidence was too weak to act on.")
        for problem in result.problems:
            click.echo(f"  problem: {problem}")
        if result.unmatched or result.triaged:
            click.echo("Next: campaign replies list --unmatched")
    if result.not_stored and not result.interrupted:
        raise CampaignError(
            f"{result.not_stored} message(s) could not be stored and stay in the source; "
            f"the other {result.stored} were: run again once the problem above is fixed"
        )
    if result.interrupted:
        raise CampaignError(f"{result.interrupted}; {result.stored} stored so far: run again to carry on")


_COLUMNS = [
    ("id", "ID", 6),
    ("received", "RECEIVED", 16),
    ("kind", "KIND", 10),
    ("reference", "REF", 11),
    ("from", "FROM", 30),
    ("subject", "SUBJECT", 40),
    ("detail", "DETAIL", 80),
]


_CSV_COLUMNS = [
    "id", "received", "kind", "reference", "from", "subject", "outcome", "suggested_outcome", "triage",
    "problem",
]  # fmt: skip


@replies.command("list")
@click.option(
    "--unmatched",
    is_flag=True,
    help="Only what waits for staff: mail not matched to a letter, and mail set aside (triage).",
)
@click.option("--kind", type=click.Choice(INBOUND_KINDS), help="Only this kind.")
@click.option("--ref", "reference", metavar="REF", help="Only messages matched to this letter.")
@click.option("--problems", is_flag=True, help="Only messages that could not be read (kept raw).")
@click.option("--limit", type=int, help="At most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV for a spreadsheet (formulas neutralised).")
@pass_app
def replies_list(
    app: App, unmatched: bool, kind, reference, problems: bool, limit, as_json: bool, as_csv: bool
) -> None:
    """List incoming messages, newest first.

    \b
    Examples:
      campaign replies list --unmatched
      campaign replies list --kind bounce --json
    """
    rows = list_messages(
        app.engine(), unmatched=unmatched, kind=kind, reference=reference, problems=problems, limit=limit
    )
    if as_json:
        echo_json_array(rows)
        return
    if as_csv:
        echo_csv(rows, _CSV_COLUMNS)
        return
    for row in rows:
        row["received"] = f"{row['received']:%Y-%m-%d %H:%M}"
        if row["kind"] == "bounce":
            # Whose message came back first: it says who cannot be reached, the target or the member.
            what = BOUNCED_MESSAGES.get(row["bounced_message"] or "")
            row["detail"] = " ".join(x for x in (what, row["status"], row["failed_recipient"]) if x)
        elif row["triage"]:
            suggestion = f"suggest {row['suggested_reference']}: " if row["suggested_reference"] else ""
            row["detail"] = f"{suggestion}{row['triage']}"
        elif row["problem"]:
            row["detail"] = row["problem"]
        else:
            row["detail"] = row["outcome"] or (
                f"suggest: {row['suggested_outcome']}" if row["suggested_outcome"] else ""
            )
    count = echo_table(rows, _COLUMNS)
    click.echo(f"{count} message(s).")
    suggested = [row for row in rows if row.get("suggestions")]
    if suggested:
        click.echo("\nMost likely letters; to match one, run its command:")
    for row in suggested:
        click.echo(f"  message {row['id']} ({row['from']}: {row['subject']})")
        for suggestion in row["suggestions"]:
            click.echo(
                f"    {suggestion['command']}   # {suggestion['target_name']}, "
                f"member {suggestion['member']}: {suggestion['why']}"
            )


@replies.command("show")
@click.argument("reply_id", type=int)
@click.option("--raw", is_flag=True, help="Print the message exactly as received.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@pass_app
def replies_show(app: App, reply_id: int, raw: bool, as_json: bool) -> None:
    """One message: what it is, which letter, who wrote it and what they said.

    \b
    Examples:
      campaign replies show 42
      campaign replies show 42 --raw > message.eml
    """
    if raw:
        click.echo(raw_message(app.engine(), reply_id).decode("utf-8", "replace"), nl=False)
        return
    row = show_message(app.engine(), reply_id)
    if as_json:
        echo_json(row)
        return
    click.echo(f"Message {row['id']}: {row['kind']}, received {row['received_at']:%d %B %Y %H:%M}")
    click.echo(f"  from: {row['from_addr']}\n  subject: {row['subject']}")
    if row["reference"]:
        click.echo(
            f"  letter: {row['reference']} to {row['target_name']} ({row['letter_state']}),"
            f" matched by {row['match_method']}"
        )
    elif row["suggested_reference"]:
        click.echo(
            f"  letter: seems to be {row['suggested_reference']}, by {row['match_method']}: "
            f"campaign replies accept {row['id']} (or match {row['id']} REF)"
        )
    else:
        click.echo("  letter: not matched (campaign replies match ID REF)")
    for suggestion in row["suggestions"]:
        click.echo(
            f"  could be: {suggestion['command']}   # {suggestion['target_name']}, "
            f"member {suggestion['member']}: {suggestion['why']}"
        )
    for failure in row["failed"]:
        how = "failed" if failure["permanent"] else "delayed"
        status = f" ({failure['status']})" if failure["status"] else ""
        what = BOUNCED_MESSAGES.get(failure["message"] or "")
        click.echo(f"  {how}: {failure['address']}{status}" + (f", the {what}" if what else ""))
        if failure["diagnostic"]:
            click.echo(f"    server said: {' '.join(failure['diagnostic'].split())}")
    if row["triage"]:
        click.echo(f"  waiting for staff: {row['triage']}")
    if row["authentication"]:
        click.echo(f"  sender checks: {row['authentication']}")
    if row["author_name"] or row["author_addr"]:
        author = " ".join(
            x for x in (row["author_name"], f"<{row['author_addr']}>" if row["author_addr"] else None) if x
        )
        click.echo(f"  written by: {author}" + (" (forwarded)" if row["forwarded"] else ""))
    if row.get("attachment_name"):
        click.echo(
            f"  attached: {row['attachment_name']} (kept with the message: replies show {row['id']} --raw)"
        )
    if row["outcome"] or row["suggested_outcome"]:
        click.echo(f"  outcome: {row['outcome'] or '-'} (suggested: {row['suggested_outcome'] or '-'})")
    if row["problem"]:
        click.echo(f"  problem: {row['problem']}")
    if row["text"]:
        click.echo("")
        click.echo(row["text"])


@replies.command("match")
@click.argument("reply_id", type=int)
@click.argument("reference")
@pass_app
def replies_match(app: App, reply_id: int, reference: str) -> None:
    """Match an unmatched message to a letter by its reference.

    \b
    Example:
      campaign replies match 42 K7M2Q-9XH4T
    """
    app.require_secret()
    done = match_manually(app.engine(), app.settings, reply_id, reference)
    click.echo(
        f"Message {reply_id} matched to {done['reference']}"
        + ("; the letter is now replied" if done["replied"] else "")
        + ("; a follow-up letter is drafted and its invitation queued" if done["follow_up"] else "")
        + "."
    )


@replies.command("accept")
@click.argument("reply_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def replies_accept(app: App, reply_id: int, as_json: bool) -> None:
    """Confirm what the engine suggested for a message set aside for staff.

    A reply then counts for its suggested letter, a bounce marks its message
    bounced and its letter `bounced` (the letter to the target came back) or
    `unreachable` (the member's invitation came back), a complaint suppresses
    the address complained about.
    Check the message first (`replies show ID`): anyone can send mail.

    \b
    Example:
      campaign replies accept 42
    """
    # A reply accepted for an employer letter drafts its follow-up, with a link.
    app.require_secret()
    done = accept_suggestion(app.engine(), app.settings, reply_id)
    if as_json:
        echo_json(done)
        return
    parts = [f"Message {reply_id} ({done['kind']}) accepted"]
    if done.get("reference"):
        parts.append(f"matched to {done['reference']}")
    if done.get("follow_up"):
        parts.append("a follow-up letter is drafted and its invitation queued")
    if done["bounced"]:
        parts.append(f"{done['bounced']} letter(s) marked bounced (the letter to its target came back)")
    if done["unreachable"]:
        parts.append(
            f"{done['unreachable']} letter(s) marked unreachable (the member's invitation came back)"
        )
    if done["suppressed"]:
        parts.append(f"suppressed: {', '.join(done['suppressed'])}")
    click.echo("; ".join(parts) + ".")


@replies.command("dismiss")
@click.argument("reply_id", type=int)
@pass_app
def replies_dismiss(app: App, reply_id: int) -> None:
    """Take a message out of triage without acting on it (a forgery, a mistake).

    \b
    Example:
      campaign replies dismiss 42
    """
    dismiss(app.engine(), reply_id)
    click.echo(f"Message {reply_id} dismissed: nothing was done with it.")


@replies.command("unmatch")
@click.argument("reply_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def replies_unmatch(app: App, reply_id: int, as_json: bool) -> None:
    """Undo a message's match to a letter (made by staff or by the engine): it waits for staff again.

    Its letter goes back to how it was before the reply (sent, self_sent or overdue) unless
    another reply still counts for it, and the follow-up the reply drafted is removed, unless
    the member has already acted on it (then nothing changes).

    \b
    Example:
      campaign replies unmatch 42
    """
    done = undo_match(app.engine(), app.settings, reply_id)
    if as_json:
        echo_json(done)
        return
    parts = [f"Message {reply_id} is no longer matched to {done['reference']} and waits for staff again"]
    if done["restored"]:
        parts.append(f"letter {done['reference']} is {done['letter_state']} again")
    else:
        parts.append(f"letter {done['reference']} stays {done['letter_state']}")
    if done["follow_up_removed"]:
        parts.append(f"follow-up {done['follow_up_removed']} and its invitation were removed")
    click.echo("; ".join(parts) + ".")


def _date(value: str) -> datetime:
    """ISO (2026-11-28) or a UK date, day first (28/11/2026, 28-11-2026, 28.11.26)."""
    return received_date(value, "--received")


@replies.command("log")
@click.argument("reference")
@click.option("--received", required=True, metavar="DATE", help="When it arrived, e.g. 2026-11-20.")
@click.option("--from", "author", metavar="NAME", help="Who wrote it (default: the letter's target).")
@click.option(
    "--file", "scan", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A scan of it."
)
@click.option("--note", metavar="TEXT", help="What it says, in brief.")
@pass_app
def replies_log(app: App, reference: str, received: str, author, scan: Path | None, note) -> None:
    """Record a reply that came on paper.

    \b
    Example:
      campaign replies log K7M2Q-9XH4T --received 2026-11-20 --from "Jane Head" \\
          --file scan.pdf --note "Will raise it with the board in January"
    """
    app.require_secret()
    done = log_paper_reply(
        app.engine(),
        app.settings,
        reference,
        _date(received),
        author=author,
        scan=scan.read_bytes() if scan else None,
        scan_name=scan.name if scan else None,
        note=note,
    )
    if done["already"]:
        click.echo(f"Already logged as message {done['reply']}.")
        return
    click.echo(
        f"Logged as message {done['reply']} on {done['reference']}"
        + ("; a follow-up letter is drafted" if done["follow_up"] else "")
        + "."
    )


@replies.command("outcome")
@click.argument("reply_id", type=int)
@click.argument("outcome", type=click.Choice(OUTCOMES))
@pass_app
def replies_outcome(app: App, reply_id: int, outcome: str) -> None:
    """Record what a reply means for the campaign (replaces the engine's suggestion).

    A holding reply or acknowledgement drafts no follow-up; coded later as an answer, it
    marks its letter replied and drafts the follow-up then.

    \b
    Example:
      campaign replies outcome 42 holding
    """
    done = set_outcome(app.engine(), reply_id, outcome, app.settings)
    click.echo(
        f"Message {reply_id}: {done['outcome']} (the engine suggested {done['suggested'] or 'nothing'})."
    )
    if done["replied"]:
        drafted = "; its follow-up letter is drafted" if done["follow_up"] else ""
        click.echo(f"It answers its letter: the letter is now replied{drafted}.")


@main.command("chase")
@click.option("--wave", "wave_name", metavar="NAME", help="Only this wave (default: every launched wave).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def chase(app: App, wave_name: str | None, as_json: bool) -> None:
    """Mark letters overdue, offer chasers, and ask members whether their MP replied.

    Letters not replied to within the wave's reply window (working days,
    skipping bank holidays in the member's nation) become overdue and their
    members are offered a chaser; members who wrote to an MP are asked,
    two weeks on, whether the MP replied, and reminded once. Running it again
    does nothing more; run it daily from cron, then `campaign send`.

    \b
    Examples:
      campaign chase
      campaign chase --wave "Employers: well-being assessment" --json
    """
    app.require_secret()
    with Progress("Chasing") as bar:
        result = run_chase(app.engine(), app.settings, wave_name, progress=bar.update)
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"{result.overdue} letters overdue, {result.chasers} chasers offered, "
        f"{result.questionnaires} MP questionnaires and {result.reminders} reminders queued."
    )
    if result.chasers or result.questionnaires or result.reminders:
        click.echo("Next: campaign send")
