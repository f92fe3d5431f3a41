"""`campaign report`: a wave's funnel, its split by region, branch, constituency or employer, and
how each employer and MP answers; as text, JSON, CSV or a chart."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import App, main, pass_app
from engine.cli.output import echo_csv, echo_json, echo_table
from engine.reports.campaign import SPLITS, funnel, replies_by_day, responsiveness
from engine.reports.charts import check_chart_path, draw

_STAGE_COLUMNS = ["letters", "invited", "opened", "confirmed", "sent", "replied", "followed_up",
                  "opted_out", "unreachable", "bounced", "failed", "overdue"]  # fmt: skip
_TARGET_COLUMNS = ["kind", "key", "name", "letters", "went", "replied", "silent", "overdue", "reply_share",
                   "median_working_days", "outcomes"]  # fmt: skip


@main.command("report")
@click.argument("wave", required=False)
@click.option(
    "--by", type=click.Choice(list(SPLITS)), help="One row per region, branch, constituency or employer."
)
@click.option("--targets", is_flag=True, help="How each employer and MP answers: replies, delay, outcomes.")
@click.option(
    "--sort",
    type=click.Choice(["silent", "slowest", "name", "letters"]),
    default="silent",
    show_default=True,
    help="With --targets: the order of the rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV (formulas neutralised).")
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the funnel (and, for one wave, replies per day) into FILE.png or FILE.svg.",
)
@pass_app
def report(
    app: App,
    wave: str | None,
    by: str | None,
    targets: bool,
    sort: str,
    as_json: bool,
    as_csv: bool,
    chart: Path | None,
) -> None:
    """Where a wave stands (every launched wave without WAVE): the funnel from letters made to
    follow-ups, as counts and shares, with what was left out at launch and why.

    \b
    Examples:
      campaign report "Employers: well-being assessment"
      campaign report --by region --csv > regions.csv
      campaign report "Employers: well-being assessment" --targets --sort silent
      campaign report "MPs: inspection and well-being" --chart funnel.png
    """
    engine = app.engine()
    if chart is not None:
        check_chart_path(chart)
    if targets:
        rows = responsiveness(engine, wave, sort)
        if as_json:
            echo_json(rows)
        elif as_csv:
            echo_csv(rows, _TARGET_COLUMNS)
        else:
            shown = [
                {
                    **r,
                    "share": f"{r['reply_share']:.0%}",
                    "median": "-" if r["median_working_days"] is None else f"{r['median_working_days']:g}",
                    "answers": ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items())) or "-",
                }
                for r in rows
            ]
            count = echo_table(
                shown,
                [
                    ("name", "TARGET", 34),
                    ("went", "SENT", 5),
                    ("replied", "REPLIED", 7),
                    ("share", "SHARE", 5),
                    ("overdue", "OVERDUE", 7),
                    ("median", "DAYS", 4),
                    ("answers", "ANSWERS", 50),
                ],
            )
            click.echo(f"{count} target(s); DAYS: median working days to a reply.")
        return
    found = funnel(engine, wave, by)
    if chart is not None:
        draw(chart, found, replies_by_day(engine, wave) if wave else None)
    if as_json:
        echo_json(found)
    elif as_csv:
        if by:
            echo_csv(found["rows"], [by, *_STAGE_COLUMNS])
        else:
            echo_csv(
                [*found["funnel"], *({"stage": b["state"], **b} for b in found["beside"])],
                ["stage", "count", "share", "meaning"],
            )
    else:
        _print_funnel(found)
    if chart is not None and not (as_json or as_csv):
        click.echo(f"Chart: {chart}")


def _print_funnel(found: dict) -> None:
    click.echo(f"{found['wave']}: {found['eligible']:,} members eligible")
    for reason, count in sorted(found["left_out"].items(), key=lambda x: -x[1]):
        click.echo(f"  left out, {reason.replace('_', ' ')}: {count:,}")
    for stage in found["funnel"]:
        click.echo(f"  {stage['stage'].replace('_', ' '):<12} {stage['count']:>8,}  {stage['share']:>5.0%}")
    beside = [b for b in found["beside"] if b["count"]]
    if beside:
        click.echo(
            "  beside the funnel: "
            + ", ".join(f"{b['state'].replace('_', ' ')} {b['count']:,}" for b in beside)
        )
    if found["by"]:
        click.echo("")
        echo_table(
            found["rows"],
            [
                (found["by"], found["by"].upper(), 30),
                *((c, c.upper().replace("_", " "), 9) for c in _STAGE_COLUMNS[:7]),
            ],
        )
