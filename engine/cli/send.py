"""`campaign send`, `campaign outbox export` and `campaign serve`: mail out, and the member pages."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import App, main, pass_app
from engine.cli.output import Progress, echo_json
from engine.errors import CampaignError
from engine.mail.outbox import count_queued, export_outbox
from engine.mail.send import resend_uncertain as resend_uncertain_messages
from engine.mail.send import send_outbox, set_paused
from engine.mail.smtp import FolderTransport, SmtpTransport


@main.group()
def outbox() -> None:
    """Queued mail, waiting for the sending worker."""


@outbox.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the count as JSON.")
@pass_app
def outbox_export(app: App, directory: Path, as_json: bool) -> None:
    """Write every queued message as an .eml file, for inspection. Sends nothing.

    \b
    Example:
      campaign outbox export outbox-preview/
    """
    app.require_secret()
    with Progress("Writing messages") as bar:
        result = export_outbox(app.engine(), directory, app.settings, progress=bar.update, on_start=bar.start)
    if as_json:
        echo_json({"directory": str(directory), "messages": result.written, "failed": result.failed})
        return
    click.echo(f"Wrote {result.written} message(s) to {directory}/ (nothing was sent).")
    if result.failed:
        click.echo(
            f"{len(result.failed)} message(s) could not be built and were set aside as failed:", err=True
        )
        for failure in result.failed[:10]:
            click.echo(f"  {failure}", err=True)


@main.command("send")
@click.option("--once", is_flag=True, help="Drain the queue and exit (default: keep running, polling).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=1000),
    default=5.0,
    show_default=True,
    help="At most this many messages a second.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--resume", is_flag=True, help="Carry on after sending paused itself.")
@click.option(
    "--resend-uncertain",
    is_flag=True,
    help="Queue again the messages a killed worker may or may not have sent (they may arrive twice).",
)
@click.option(
    "--pause-after",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Pause after this many failures in a row.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def send_command(
    app: App,
    once: bool,
    rate: float,
    limit: int | None,
    resume: bool,
    resend_uncertain: bool,
    pause_after: int,
    as_json: bool,
) -> None:
    """Deliver queued mail: over SMTP when SMTP_URL is set, otherwise into the outbox folder.

    Safe to run several at once on PostgreSQL. Killed at any moment, a
    restarted worker loses nothing and sends nothing twice, except a message
    that was mid-transaction, which is marked uncertain.

    \b
    Examples:
      campaign send --once                      # into ./outbox/ unless SMTP_URL is set
      SMTP_URL=smtp://user:pass@relay.example:587 campaign send --rate 10
    """
    app.require_secret()
    engine = app.engine()
    if resume:
        set_paused(engine, None)
    if resend_uncertain:
        click.echo(f"{resend_uncertain_messages(engine)} uncertain message(s) queued again.", err=True)
    settings = app.settings
    transport = (
        SmtpTransport(settings.smtp_url) if settings.smtp_url else FolderTransport(settings.outbox_dir)
    )
    if not as_json:
        click.echo(
            f"Sending to {transport.description} at up to {rate:g} a second"
            + (" (until the queue is empty)." if once else "; Ctrl-C to stop."),
            err=True,
        )
    with Progress("Sending") as bar:
        # Draining the queue has an end to show; a worker left running only counts.
        if once:
            due = count_queued(engine, due_only=True)
            bar.start(min(due, limit) if limit else due)
        result = send_outbox(
            engine,
            settings,
            transport,
            rate=rate,
            once=once,
            limit=limit,
            pause_after=pause_after,
            progress=bar.update,
        )
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(f"{result.sent} sent, {result.retrying} to retry later, {result.failed} failed.")
        if result.held:
            click.echo(
                f"{result.held} letter(s) held by their target's daily cap: they go from the next day "
                "(see wave create --daily-cap)."
            )
        if result.recovered.requeued or result.recovered.uncertain:
            click.echo(
                f"Recovered from a stopped worker: {result.recovered.requeued} requeued, "
                f"{result.recovered.uncertain} uncertain (see --resend-uncertain)."
            )
        for error in result.errors[:10]:
            click.echo(f"  {error}", err=True)
    if result.paused:
        raise CampaignError(f"sending paused: {result.paused}. Fix the cause, then: campaign send --resume")


@main.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (put a proxy in front)."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on."
)
@pass_app
def serve_command(app: App, host: str, port: int) -> None:
    """Serve the member pages (each member's letter behind their personal link) and the staff
    pages under /staff/ (sign in with an account from `campaign users add`).

    \b
    Example:
      campaign serve --port 8000     # then open a link from an invitation, or /staff/
    """
    import uvicorn

    from engine.web.app import create_app, server_config

    app.require_secret()
    pages = create_app(app.engine(), app.settings)
    click.echo(
        f"Member pages on http://{host}:{port}/ (links in invitations use {app.settings.base_url}).", err=True
    )
    uvicorn.Server(server_config(pages, host, port)).run()


# A member's first letter, or the follow-up or chaser drafted for them after launch.
