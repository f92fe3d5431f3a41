"""`campaign template check` and `campaign wave …`: writing, previewing and launching waves."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import App, UserError, main, pass_app
from engine.cli.output import Progress, echo_json, echo_table
from engine.letters.attachments import kb
from engine.letters.documents import (
    LEFT_OUT_WORDS,
    letter_document,
    pdf_bytes,
    wave_attachments_pdf,
    write_wave_pdfs,
)
from engine.letters.escalation import OUTCOME_WORDS, after_rule, members_label
from engine.letters.launch import SHARES_LETTER, launch_wave, left_out, preview_merge
from engine.letters.link_secret import reinvite_wave
from engine.letters.merge import long_date
from engine.letters.pledges import pledge_counts
from engine.letters.similarity import similar_warning_line
from engine.letters.targeting import nations_label
from engine.letters.template_check import check_template_file
from engine.letters.waves import (
    WaveSpec,
    create_wave,
    edit_wave,
    effective_daily_cap,
    list_waves,
    wave_details,
    wave_status,
)
from engine.mail.outbox import build_invitation, parse_message
from engine.settings import Settings
from engine.store.files import make_folder, write_atomically
from engine.store.models import LETTER_STATES, WAVE_TARGETS

# The two bounces told apart in `wave status`: who cannot be reached.
_WHO_FAILED = {
    "failed": "(could not be sent to the target)",
    "bounced": "(the letter to the target bounced)",
    "unreachable": "(the member's invitation bounced: the letter never went)",
}

REASONS = {
    "outside_nations": "outside the wave's nations (--nations)",
    "not_selected": "not matching --where or --after/--outcome",
    "opted_out": "opted out of campaign mail",
    "no_email": "no email address",
    "unresolved": "not resolved to a target",
    "no_employer": "no employer (no school: supply, central or retired staff)",
    "no_employer_contact": "no employer contact",
}
SHARING = "named as co-signatories in the letter another member holds for their target (--one-per-target)"


# ---- templates ----------------------------------------------------------------


@main.group()
def template() -> None:
    """Check campaign templates."""


@template.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--members", "with_members", is_flag=True, help="Also report members who lack a field it uses.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def template_check(app: App, path: Path, with_members: bool, as_json: bool) -> None:
    """List the fields a template uses and reject unknown ones.

    \b
    Example:
      campaign template check templates/letters/mp-inspection.txt --members
    """
    report = check_template_file(path, app.engine() if with_members else None)
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(f"{report.file} ({report.kind} template) uses:")
        for use in report.fields:
            click.echo(f"  line {use['line']:>3}  {use['field']}")
        for name, lack in report.lacking.items():
            examples = ", ".join(lack["examples"][:5]) + (", …" if lack["members"] > 5 else "")
            click.echo(f"{lack['members']} member(s) have no {name}: {examples}")
    if report.problems:
        for problem in report.problems:
            click.echo(problem, err=True)
        raise UserError(f"{report.file}: {len(report.problems)} problem(s)")


# ---- waves --------------------------------------------------------------------


def wave_options(create: bool):
    def decorate(f):
        options = [
            click.option(
                "--target",
                type=click.Choice(WAVE_TARGETS),
                required=create,
                help="Who the letters go to: each member's MP or employer, or one fixed recipient; "
                "pledge: no letter, a question (--question) the member answers on their page.",
            ),
            click.option(
                "--letter",
                "letter",
                metavar="TEMPLATE",
                help="Letter template: a path or a name in templates/letters/ (required, except for "
                "a pledge wave, which has none).",
            ),
            click.option(
                "--question",
                metavar="'I WILL …'",
                help="A pledge wave's question, answered on the member's page with 'I pledge' or "
                "'Not for me'.",
            ),
            click.option(
                "--done-label",
                metavar="WORDS",
                help="What a letter that went (sent by us or by the member) counts as in `wave status`, "
                "e.g. 'stepped down'.",
            ),
            click.option(
                "--invite",
                required=create,
                metavar="TEMPLATE",
                help="Invitation email: a name in templates/email/ (needs NAME.txt and NAME.html).",
            ),
            click.option(
                "--subject", help="Subject for every letter, overriding the template's (Jinja2 allowed)."
            ),
            click.option(
                "--asks",
                metavar="SENTENCE",
                help="What the letter asks, in one plain sentence for the invitation, e.g. 'It asks "
                "your MP to press ministers for fairer, safer inspections.' (default: the invitation "
                "template's own words).",
            ),
            click.option("--reply-days", type=int, help="Working days a target has to reply (default 10)."),
            click.option(
                "--link-days", type=int, help="Days members' links stay valid after launch (default 30)."
            ),
            click.option(
                "--where",
                multiple=True,
                metavar="COLUMN=VALUE,…",
                help="Only members whose imported COLUMN (a member column or a custom field) is one of "
                "the VALUEs, e.g. role=headteacher,deputy; COLUMN= means empty; repeat for several columns.",
            ),
            click.option(
                "--after",
                metavar="WAVE",
                help="Only members who had a letter in this earlier wave, chosen by what became of it "
                "(--outcome); '' removes the rule.",
            ),
            click.option(
                "--outcome",
                "outcomes",
                metavar="OUTCOME,…",
                help="With --after: the outcomes of the earlier letter to write after: "
                + ", ".join(OUTCOME_WORDS)
                + " (see README), e.g. refused,silent.",
            ),
            click.option(
                "--nations",
                metavar="NATION,…",
                help="Only members in these nations: england, wales, scotland, northern-ireland, or all "
                "(default: the letter template's `{# nations: … #}` line, else all). By constituency; "
                "employer waves by the school's country.",
            ),
            click.option("--to", metavar="'NAME <EMAIL>'", help="The one recipient of a fixed wave."),
            click.option(
                "--to-address", metavar="LINES", help="Postal address of --to, lines separated by |."
            ),
            click.option("--to-salutation", metavar="TEXT", help="What follows 'Dear' for --to."),
            click.option(
                "--follow-up",
                metavar="TEMPLATE",
                help="Letter drafted when the target replies (employer waves: employer-follow-up).",
            ),
            click.option(
                "--chaser",
                metavar="TEMPLATE",
                help="Letter offered when no reply comes in time (employer waves: employer-chaser).",
            ),
            click.option(
                "--attach",
                multiple=True,
                metavar="FILE",
                help="A PDF or DOCX file to send with every letter and print after it (repeatable; "
                "stored now, so later changes to the file change nothing; a file of the same name "
                "replaces the one attached).",
            ),
            click.option(
                "--one-per-target/--one-per-member",
                "one_per_target",
                default=None,
                help="One letter per target (employer, MP), however many selected members share it: "
                "the member with the lowest membership number holds it and the others are named in it "
                "as co-signatories (letter.officials, letter.co_signatories). Default: one per member.",
            ),
            click.option(
                "--meeting-date",
                metavar="YYYY-MM-DD",
                help="The meeting the letter is for (wave.meeting_date): an unanswered letter is chased "
                "--chase-before working days before it, and not from that day on. Not in the past.",
            ),
            click.option(
                "--chase-before",
                type=int,
                metavar="DAYS",
                help="Working days before --meeting-date to chase an unanswered letter (default 5).",
            ),
            click.option(
                "--daily-cap",
                type=click.IntRange(min=0),
                metavar="N",
                help="At most N letters to one target address a day (Europe/London); the rest wait "
                "for the next days. 0: no cap (default: CAMPAIGN_DAILY_CAP, else 50). Can be changed "
                "after launch.",
            ),
            click.option(
                "--ask-after",
                "ask_days",
                type=int,
                help="Days after an MP letter goes before asking the member if the MP replied (default 14).",
            ),
        ]
        if not create:
            options.append(
                click.option(
                    "--detach", multiple=True, metavar="NAME", help="Remove an attachment by its name."
                )
            )
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _spec(**kw) -> WaveSpec:
    lists = {name: list(kw.pop(name, ()) or ()) or None for name in ("where", "attach", "detach")}
    return WaveSpec(**lists, **kw)


def _print_wave(wave: dict, settings: Settings) -> None:
    click.echo(
        f"Wave {wave['name']!r}: {wave['status']}, to {wave['target']}"
        + (f" ({wave['fixed_name']})" if wave["target"] == "fixed" else "")
    )
    if wave["target"] == "pledge":
        click.echo(f"  question: {wave['question']}   invitation: {wave['invite_template']}")
    else:
        click.echo(f"  letter: {wave['letter_template']}   invitation: {wave['invite_template']}")
    if wave.get("done_label"):
        click.echo(f"  a letter that went counts as: {wave['done_label']}")
    if wave.get("asks"):
        click.echo(f"  the invitation says: {wave['asks']}")
    click.echo(f"  members: {members_label(wave['filters'])}, in {nations_label(wave.get('nations'))}")
    if wave["target"] != "pledge":
        click.echo(f"  reply within {wave['reply_days']} working days")
    if wave.get("one_per_target"):
        click.echo(
            "  one letter per target: its lead holds it, the other members are named as co-signatories"
        )
    if wave.get("meeting_date"):
        click.echo(
            f"  meeting on {long_date(wave['meeting_date'])}: an unanswered letter is chased "
            f"{wave['chase_before']} working days before it"
        )
    click.echo(f"  {_daily_cap_words(effective_daily_cap(wave, settings))}")
    later = [f"follow-up: {wave['follow_up_template']}" if wave.get("follow_up_template") else ""]
    later.append(f"chaser: {wave['chaser_template']}" if wave.get("chaser_template") else "")
    if wave["target"] == "mp":
        later.append(f"asks whether the MP replied after {wave['ask_days']} days")
    if any(later):
        click.echo("  " + "   ".join(x for x in later if x))
    for attachment in wave.get("attachments") or ():
        click.echo(f"  attached: {attachment['name']} ({attachment['type']}, {kb(attachment['size'])})")


def _daily_cap_words(cap: int) -> str:
    if not cap:
        return "no daily cap of letters per target"
    return f"at most {cap} letter(s) a day to any one target (the rest wait for the next days)"


@main.group()
def wave() -> None:
    """Create, preview and launch waves of letters."""


@wave.command("create")
@click.argument("name")
@wave_options(create=True)
@pass_app
def wave_create(app: App, name: str, **options) -> None:
    """Create a wave (a draft, editable until launched).

    \b
    Examples:
      campaign wave create "MPs autumn" --target mp --letter mp-inspection --invite invitation
      campaign wave create "SoS pause" --target fixed --letter secretary-of-state --invite invitation \\
          --to "Secretary of State for Education <sos@education.example>" --where role=Headteacher
      campaign wave create "SoS escalation" --target fixed --letter secretary-of-state \\
          --invite invitation --to "Secretary of State for Education <sos@education.example>" \\
          --after "Employers autumn" --outcome refused,silent
      campaign wave create "Signage pledge" --target pledge --invite pledge-invitation \\
          --question "I will remove our inspection grade from our signage and letterheads"
    """
    create_wave(app.engine(), name, _spec(**options), app.settings)
    _print_wave(wave_details(app.engine(), name), app.settings)
    click.echo(f"Next: campaign wave preview {name!r}")


@wave.command("edit")
@click.argument("name")
@wave_options(create=False)
@pass_app
def wave_edit(app: App, name: str, **options) -> None:
    """Change a draft wave; only the options given change.

    \b
    Example:
      campaign wave edit "MPs autumn" --reply-days 15 --where region=London
    """
    edit_wave(app.engine(), name, _spec(**options), app.settings)
    _print_wave(wave_details(app.engine(), name), app.settings)


@wave.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
def wave_list(app: App, as_json: bool) -> None:
    """List waves with their letter counts.

    \b
    Example:
      campaign wave list
    """
    rows = list_waves(app.engine())
    if as_json:
        echo_json(rows)
        return
    echo_table(
        rows,
        [
            ("name", "WAVE", 28),
            ("target", "TARGET", 8),
            ("status", "STATUS", 8),
            ("letters", "LETTERS", 7),
            ("letter_template", "LETTER", 30),
        ],
    )


@wave.command("show")
@click.argument("name")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the wave as JSON (without its frozen templates)."
)
@pass_app
def wave_show(app: App, name: str, as_json: bool) -> None:
    """Show a wave's settings.

    \b
    Example:
      campaign wave show "MPs autumn"
    """
    wave = wave_details(app.engine(), name)
    wave.pop("frozen", None)
    if as_json:
        echo_json({**wave, "after": after_rule(wave["filters"])})
    else:
        _print_wave(wave, app.settings)


@wave.command("preview")
@click.argument("name")
@click.option(
    "--member", "membership_no", metavar="NO", help="Preview this member (default: the first eligible)."
)
@click.option(
    "--out",
    default="-",
    metavar="FILE.html|FILE.pdf|FILE.eml|-",
    help="Where to write: the letter as HTML or PDF, the invitation as .eml, or text on stdout.",
)
@pass_app
def wave_preview(app: App, name: str, membership_no: str | None, out: str) -> None:
    """Render one real merge exactly as it will be sent, writing nothing to the database.

    \b
    Examples:
      campaign wave preview "MPs autumn" --member M100001
      campaign wave preview "MPs autumn" --out preview.pdf
    """
    # A preview's link is an example, but it is made like a real one: from the secret.
    app.require_secret(check_links=False)
    wave, letter, invitation, merger = preview_merge(app.engine(), name, app.settings, membership_no)
    document = letter_document(letter, merger.renderer)
    raw = build_invitation(invitation, letter, wave, merger.renderer, app.settings)
    message = parse_message(raw)
    if out == "-" and wave["target"] == "pledge":
        click.echo(f"Pledge (answered on the member's page): {letter['body_text']}", nl=False)
    elif out == "-":
        click.echo(f"To:      {letter['target_name']} <{letter['target_email'] or 'no email: post only'}>")
        click.echo(f"Subject: {letter['subject']}   [Ref: {letter['reference']}]\n")
        click.echo(letter["body_text"])
        for attachment in wave_details(app.engine(), name)["attachments"]:
            click.echo(f"[attached: {attachment['name']} ({attachment['type']}, {kb(attachment['size'])})]")
    if out == "-":
        click.echo("-" * 72 + "\nInvitation email\n" + "-" * 72)
        for header in ("From", "To", "Subject", "List-Unsubscribe"):
            click.echo(f"{header}: {message[header]}")
        click.echo()
        click.echo(message.get_body(("plain",)).get_content())
        if wave["status"] == "draft":
            click.echo(
                "(A preview: its reference and link are examples; each letter gets its own at launch.)"
            )
        return
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".html":
        data = document.encode()
    elif suffix == ".pdf":
        # As it will print: the letter, then the wave's attachments.
        data = pdf_bytes([document], wave_attachments_pdf(app.engine(), wave.get("id")))
    elif suffix == ".eml":
        data = raw
    else:
        raise UserError(f"--out: {out!r} must end in .html, .pdf or .eml (or be - for text)")
    make_folder(path.parent)
    write_atomically(path, data)
    click.echo(
        f"Wrote {path} (member {letter['merge_snapshot']['member']['membership_no']}, "
        f"to {letter['target_name']})."
    )


SIMILAR_WARN = click.option(
    "--similar-warn",
    type=click.IntRange(min=0),
    metavar="N",
    help="Warn about a target that would get more than N letters more than 90% the same text "
    "(default: CAMPAIGN_SIMILAR_WARN, else 20; 0: no check).",
)


@wave.command("launch")
@click.argument("name")
@SIMILAR_WARN
@click.option("--json", "as_json", is_flag=True, help="Print counts and every member skipped, with why.")
@pass_app
def wave_launch(app: App, name: str, similar_warn: int | None, as_json: bool) -> None:
    """Create every eligible member's letter and queue their invitation, in one transaction.

    Launching again adds letters only for members who have none yet.

    \b
    Example:
      campaign wave launch "MPs autumn"
    """
    app.require_secret()
    with Progress("Merging letters") as bar:
        result = launch_wave(
            app.engine(),
            name,
            app.settings,
            list_skipped=as_json,
            progress=bar.update,
            on_start=bar.start,
            similar_warn=similar_warn,
        )
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"Wave {name!r}: {result.created} letter(s) created, {result.invitations_queued} "
        f"invitation(s) queued, {result.already} member(s) already had a letter."
    )
    if result.sharing:
        click.echo(f"  sharing {result.sharing}: {SHARING}")
    for reason, count in sorted(result.skipped.items(), key=lambda item: -item[1]):
        click.echo(f"  skipped {count}: {REASONS.get(reason, reason)}")
    if result.skipped:
        click.echo("  (--json lists each skipped member and why)")
    for warning in result.similar:
        click.echo(similar_warning_line(warning, result.similar_warn))
    click.echo("Next: campaign outbox export DIR to inspect the invitations; nothing has been sent.")


@wave.command("status")
@click.argument("name")
@SIMILAR_WARN
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def wave_status_cmd(app: App, name: str, similar_warn: int | None, as_json: bool) -> None:
    """Count a wave's letters by state, and its queued mail.

    A pledge wave shows its pledged / declined / no answer counts (by region or
    employer: `campaign pledges`); a wave with --done-label shows how many letters
    went, under that label (e.g. "stepped down: 3").

    `bounced` letters reached the target's mail server and came back (we cannot
    reach the MP or employer); `unreachable` letters never went, because the
    member's own invitation bounced (we cannot reach the member).

    \b
    Example:
      campaign wave status "MPs autumn"
    """
    if similar_warn is None:
        similar_warn = app.settings.similar_warn
    status = wave_status(app.engine(), name, similar_warn)
    status["daily_cap"] = effective_daily_cap(status, app.settings)
    earlier: dict[str, int] = {}
    status["left_out"] = left_out(app.engine(), name, earlier)
    status["sharing"] = status["left_out"].pop(SHARES_LETTER, 0)
    if status["after"]:
        status["after"] = {**status["after"], "members": earlier}
    if as_json:
        echo_json(status)
        return
    what = "member(s) asked" if status["target"] == "pledge" else "letter(s)"
    click.echo(f"Wave {name!r} ({status['status']}, to {status['target']}): {status['letters']} {what}")
    if status["meeting_date"]:
        click.echo(
            f"  meeting on {long_date(status['meeting_date'])}; unanswered letters are chased "
            f"{status['chase_before']} working days before it"
        )
    if status["sharing"]:
        click.echo(f"  sharing {status['sharing']}: {SHARING}")
    if status["target"] != "pledge":
        click.echo(f"  {_daily_cap_words(status['daily_cap'])}")
    if status["filters"]:
        click.echo(f"  members: {members_label(status['filters'])}")
    if status["after"]:
        # Every member by what became of their earlier letter: who was chosen, and who not and why.
        counts = status["after"]["members"]
        order = [*OUTCOME_WORDS, "no_letter"]
        click.echo(
            f"  members by their letter in {status['after']['wave']!r}: "
            + ", ".join(
                f"{word.replace('_', ' ')} {counts[word]}"
                for word in sorted(counts, key=lambda w: order.index(w) if w in order else len(order))
            )
        )
    if "pledges" in status:
        counts = status["pledges"]
        click.echo(f"  {status['question']}")
        click.echo(f"  pledged: {counts['pledged']}, declined: {counts['declined']}, ", nl=False)
        click.echo(f"no answer: {counts['no_answer']}")
    if "done" in status:
        click.echo(f"  {status['done']['label']}: {status['done']['letters']}")
    for state in LETTER_STATES:
        if status["states"].get(state):
            note = f"  {_WHO_FAILED[state]}" if state in _WHO_FAILED else ""
            click.echo(f"  {state:<12} {status['states'][state]}{note}")
    for label, key in (("follow-ups", "follow_ups"), ("chasers", "chasers")):
        if status[key]:
            counts = ", ".join(f"{s} {status[key][s]}" for s in LETTER_STATES if s in status[key])
            click.echo(f"  {label}: {counts}")
    if status["incoming"]:
        click.echo(
            "  incoming: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(status["incoming"].items()))
        )
    if status["outbox"]:
        click.echo("  mail: " + ", ".join(f"{k} {v}" for k, v in sorted(status["outbox"].items())))
    for row in status["undelivered"]:
        click.echo(f"  {row['letters']} {row['state']} ({_WHO_FAILED[row['state']][1:-1]}): {row['reason']}")
    for reason, count in sorted(status["left_out"].items(), key=lambda item: -item[1]):
        click.echo(f"  left out {count}: {REASONS.get(reason, reason)}")
    for warning in status["similar"]:
        click.echo("  " + similar_warning_line(warning, similar_warn))


@wave.command("reinvite")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def wave_reinvite(app: App, name: str, as_json: bool) -> None:
    """Queue the invitation again, with each member's current link, for every letter not yet acted on.

    For after `campaign links reissue`: the links in the invitations already
    sent no longer work. Letters whose link has expired, and members who asked
    for no more campaign mail, get nothing; an invitation still in the outbox
    will carry the new link anyway.

    \b
    Example:
      campaign wave reinvite "MPs autumn"
    """
    app.require_secret()
    result = reinvite_wave(app.engine(), app.settings, name)
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"Wave {name!r}: {result.queued} invitation(s) queued again; {result.waiting} still in the outbox, "
        f"{result.expired} expired, {result.not_emailed} not to be emailed."
    )
    if result.queued:
        click.echo("Next: campaign send")


@wave.command("pdf")
@click.argument("name")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the PDFs.",
)
@click.option(
    "--combined",
    is_flag=True,
    help="One PDF for a print run (a file per 200 letters or fewer, shared out evenly).",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([*LETTER_STATES, "all"]),
    help="Print letters in this state (repeatable; 'all': every letter) instead of those due on paper.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N letters chosen.")
@click.option("--ref", "references", multiple=True, help="Only these letter references.")
@click.option("--json", "as_json", is_flag=True, help="Print what was printed and left out as JSON.")
@pass_app
def wave_pdf(
    app: App,
    name: str,
    out_dir: Path,
    combined: bool,
    states: tuple[str, ...],
    limit: int | None,
    references: tuple[str, ...],
    as_json: bool,
) -> None:
    """Print-ready A4 PDFs of the letters of a launched wave that are due on paper.

    Due on paper: letters the member sends themselves (self_sent), and confirmed
    letters with no email address to send them to. --state chooses others.

    \b
    Examples:
      campaign wave pdf "Employers autumn" --out print-run/ --combined
      campaign wave pdf "Employers autumn" --out pdfs/ --state bounced --state failed
    """
    chosen = ["all"] if "all" in states else list(states) or None
    with Progress("Printing letters") as bar:
        run = write_wave_pdfs(
            app.engine(),
            name,
            out_dir,
            combined=combined,
            states=chosen,
            limit=limit,
            references=list(references) or None,
            progress=bar.update,
            on_start=bar.start,
        )
    if as_json:
        echo_json(run.as_dict())
        return
    where = run.files[0] if combined and len(run.files) == 1 else out_dir
    line = (
        f"Printed {_count(run.letters, 'letter')} ({_count(run.pages, 'page')}) to {where}"
        if run.letters
        else "Printed no letters"
    )
    left_out = sum(run.left_out.values())
    if left_out:
        reasons = sorted(run.left_out.items(), key=lambda item: (-item[1], item[0]))
        line += f"; left out {left_out}: " + ", ".join(
            f"{n} {LEFT_OUT_WORDS.get(reason, reason)}" for reason, n in reasons
        )
    click.echo(line + ".")
    if chosen is None and set(run.left_out) - {"over_limit"}:
        click.echo(
            "Only letters due on paper are printed; choose others with --state (e.g. --state bounced)."
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


# ---- letters and outbox ---------------------------------------------------------


@main.command("pledges")
@click.argument("name", metavar="WAVE")
@click.option(
    "--by",
    type=click.Choice(["region", "employer"]),
    help="Count per region or per employer (members without one under 'no region', 'no employer').",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_app
def pledges_cmd(app: App, name: str, by: str | None, as_json: bool) -> None:
    """Count a pledge wave's answers: pledged, declined, no answer; in all, or per region or employer.

    \b
    Examples:
      campaign pledges "Signage pledge"
      campaign pledges "Signage pledge" --by employer --json
    """
    counts = pledge_counts(app.engine(), name, by)
    if as_json:
        echo_json(counts)
        return
    click.echo(f"Wave {name!r}: {counts['question']}")
    click.echo(
        f"  pledged: {counts['pledged']}, declined: {counts['declined']}, no answer: {counts['no_answer']}"
    )
    if by is not None:
        echo_table(
            counts["groups"],
            [
                (by, by.upper(), 40),
                ("pledged", "PLEDGED", 7),
                ("declined", "DECLINED", 8),
                ("no_answer", "NO ANSWER", 9),
            ],
        )
