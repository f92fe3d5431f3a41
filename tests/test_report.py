"""The reports organisers steer by: a wave's funnel, split by region or employer, and how each
target answers; as text, JSON, CSV and a chart."""

from __future__ import annotations

import csv
import io
import json

from conftest import Cli
from sqlalchemy import func, select
from test_rights import WAVE, replied  # noqa: F401  (a wave with one letter sent and answered)
from test_waves import (
    SETTINGS,
    sample,  # noqa: F401
)

from engine.letters.confirm import mark_opened, wave_for_token
from engine.letters.links import link_token
from engine.letters.working_days import working_days_between
from engine.reports.campaign import funnel, responsiveness
from engine.store.models import letter_table


def test_the_funnel_counts_each_stage_once_with_its_share_and_what_was_left_out(replied):  # noqa: F811
    engine, member, letter, _ = replied
    mark_opened(engine, wave_for_token(engine, link_token(SETTINGS.secret, letter["link_nonce"])))
    with engine.connect() as conn:
        made = conn.execute(
            select(func.count()).select_from(letter_table).where(letter_table.c.kind == "letter")
        ).scalar_one()
    found = funnel(engine, WAVE)
    stages = {s["stage"]: s["count"] for s in found["funnel"]}
    assert stages == {
        "letters": made,
        "invited": made,  # every invitation went (to the folder)
        "opened": 1,
        "confirmed": 1,
        "sent": 1,
        "replied": 1,
        "followed_up": 1,
    }
    assert found["funnel"][2]["share"] == round(1 / made, 4)
    assert found["eligible"] == made + sum(found["left_out"].values()) and found["left_out"]
    # Opening the page again changes nothing.
    mark_opened(engine, wave_for_token(engine, link_token(SETTINGS.secret, letter["link_nonce"])))
    assert funnel(engine, WAVE)["funnel"][2]["count"] == 1
    by_region = funnel(engine, WAVE, by="region")
    assert sum(r["letters"] for r in by_region["rows"]) == made
    [mine] = [r for r in by_region["rows"] if r["region"] == member["region"]]
    assert mine["replied"] == 1


def test_targets_are_listed_silent_first_with_their_answers_and_delay(replied):  # noqa: F811
    engine, _, letter, _ = replied
    rows = responsiveness(engine, WAVE)
    [answered] = [r for r in rows if r["key"] == letter["target_key"]]
    assert (answered["went"], answered["replied"], answered["silent"]) == (1, 1, 0)
    assert answered["outcomes"] == {"supportive": 1}
    assert answered["median_working_days"] == 0  # answered the same day
    assert rows[-1]["went"] == 0 or rows[0]["silent"] >= rows[-1]["silent"]


def test_working_days_leave_out_weekends_and_bank_holidays():
    from datetime import date

    # After Friday 18 December 2026, up to Tuesday 29 December: 21, 22, 23, 24 and 29 count;
    # Christmas (Fri 25) and Boxing Day's substitute (Mon 28) are bank holidays in England.
    assert working_days_between(date(2026, 12, 18), date(2026, 12, 29)) == 5
    assert working_days_between(date(2026, 11, 27), date(2026, 11, 27)) == 0


def test_the_report_command_prints_json_csv_and_a_chart(replied, db_url, tmp_path):  # noqa: F811
    cli = Cli(db_url)
    text = cli("report", WAVE)
    assert text.exit_code == 0 and "replied" in text.output and "members eligible" in text.output
    data = json.loads(cli("report", WAVE, "--json").output)
    assert [s["stage"] for s in data["funnel"]][0] == "letters"
    rows = list(csv.DictReader(io.StringIO(cli("report", WAVE, "--by", "employer", "--csv").output)))
    assert rows and set(rows[0]) >= {"employer", "letters", "replied"}
    targets = list(csv.DictReader(io.StringIO(cli("report", WAVE, "--targets", "--csv").output)))
    assert any(r["replied"] == "1" for r in targets)
    png, svg = tmp_path / "funnel.png", tmp_path / "funnel.svg"
    assert cli("report", WAVE, "--chart", str(png)).exit_code == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert cli("report", WAVE, "--chart", str(svg)).exit_code == 0
    assert b"<svg" in svg.read_bytes()[:400]
    bad = cli("report", WAVE, "--chart", str(tmp_path / "funnel.gif"))
    assert bad.exit_code == 2 and "name a .png or .svg file" in bad.output
    unknown = cli("report", "No such wave")
    assert unknown.exit_code == 2 and "no wave named 'No such wave'" in unknown.output


def test_a_pledge_waves_answers_sit_beside_its_funnel_and_it_has_no_targets_to_rank(sample):  # noqa: F811
    import pytest
    from test_pledges import PLEDGE

    from engine.errors import CampaignError
    from engine.letters.confirm import letter_for_member
    from engine.letters.launch import launch_wave
    from engine.letters.pledges import answer_pledge
    from engine.letters.waves import create_wave

    create_wave(sample, "Pledge", PLEDGE, SETTINGS)
    launch_wave(sample, "Pledge", SETTINGS)
    answer_pledge(sample, letter_for_member(sample, "Pledge", "M100001"), True)
    answer_pledge(sample, letter_for_member(sample, "Pledge", "M100002"), False)
    beside = {b["state"]: b["count"] for b in funnel(sample, "Pledge")["beside"]}
    assert (beside["pledged"], beside["declined"]) == (1, 1)
    assert {s["stage"]: s["count"] for s in funnel(sample, "Pledge")["funnel"]}["confirmed"] == 1
    with pytest.raises(CampaignError, match=r"^'Pledge' is a pledge wave: it writes to no one"):
        responsiveness(sample, "Pledge")
    # Across every wave, the pledge wave adds no row.
    assert responsiveness(sample) == []
