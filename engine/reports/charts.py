"""Charts of a report, drawn with matplotlib into a PNG or SVG file (no screen needed)."""

from __future__ import annotations

import io
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from engine.errors import CampaignError
from engine.letters.working_days import working_days_after
from engine.store.files import write_atomically

FORMATS = (".png", ".svg")


def check_chart_path(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise CampaignError(f"--chart: {path}: name a .png or .svg file")


def draw(path: Path, report: dict[str, Any], timeline: dict[str, Any] | None) -> None:
    """The chart (see `render`) into a .png or .svg file, whole or not at all."""
    check_chart_path(path)
    write_atomically(path, render(report, timeline, path.suffix.lower().lstrip(".")))


def render(report: dict[str, Any], timeline: dict[str, Any] | None, fmt: str = "svg") -> bytes:
    """The funnel as bars (count and share at each stage), and, for one wave, letters sent and
    replies received per day with the reply deadline of the first letters marked; `fmt`: png or svg."""
    # A Figure of its own, not pyplot's: pyplot keeps global state, and the staff pages draw
    # charts in several threads at once.
    from matplotlib.figure import Figure

    panels = 2 if timeline else 1
    figure = Figure(figsize=(8, 4.2 * panels))
    axes = figure.subplots(panels, 1, squeeze=False)
    stages = report["funnel"]
    funnel_axes = axes[0][0]
    labels = [s["stage"].replace("_", " ") for s in stages][::-1]
    counts = [s["count"] for s in stages][::-1]
    bars = funnel_axes.barh(labels, counts, color="#2f6f9f")
    for bar, stage in zip(bars, stages[::-1], strict=True):
        funnel_axes.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {stage['count']:,} ({stage['share']:.0%})",
            va="center",
            fontsize=9,
        )
    funnel_axes.set_title(f"{report['wave']}: from letters made to follow-ups")
    funnel_axes.set_xlabel("letters")
    funnel_axes.margins(x=0.25)
    if timeline:
        _timeline(axes[1][0], timeline)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format=fmt, dpi=100)
    return out.getvalue()


def _timeline(axes: Any, timeline: dict[str, Any]) -> None:
    sent = Counter(moment.date() for moment in timeline["sent"])
    replied = Counter(moment.date() for moment in timeline["replied"])
    days = sorted(set(sent) | set(replied))
    if not days:
        axes.text(0.5, 0.5, "nothing sent yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    span = [days[0] + timedelta(days=n) for n in range((days[-1] - days[0]).days + 1)]
    axes.bar(span, [sent.get(d, 0) for d in span], color="#9fb7c9", label="letters sent")
    axes.plot(span, [replied.get(d, 0) for d in span], color="#b0413e", marker="o", label="replies received")
    # The first letters' deadline: the wave's reply window in working days (England's calendar).
    deadline = working_days_after(days[0], timeline["reply_days"], "England")
    axes.axvline(
        deadline,
        color="#333333",
        linestyle="--",
        label=f"reply deadline ({timeline['reply_days']} working days)",
    )
    axes.set_title("Letters sent and replies received, per day")
    axes.legend(loc="upper right", fontsize=8)
    axes.tick_params(axis="x", labelrotation=30)
