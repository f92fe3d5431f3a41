"""Launching a wave from the dashboard: organisers only; staff and viewers see it and cannot."""

from __future__ import annotations

import requests
from sqlalchemy import func, select
from test_staff import PASSWORD, StaffSite, events, form_csrf
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.letters.waves import create_wave, get_wave
from engine.store.models import letter_table, outbox_table
from engine.web.accounts import add_user


def counts(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(letter_table)).scalar_one(),
            conn.execute(select(func.count()).select_from(outbox_table)).scalar_one(),
        )


def test_only_an_organiser_launches_a_wave_from_the_dashboard(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    wave_id = get_wave(sample, "MPs")["id"]
    add_user(sample, "staff@union.example", "staff", PASSWORD)
    add_user(sample, "organiser@union.example", "organiser", PASSWORD)
    with StaffSite(sample) as site:
        clerk = requests.Session()
        site.login(clerk, "staff@union.example")
        home = clerk.get(f"{site.base}/staff/").text
        assert "Not launched yet" in home and "<strong>MPs</strong>" in home
        assert "Launching a wave needs the organiser role" in home and "/launch" not in home
        refused = clerk.post(f"{site.base}/staff/waves/{wave_id}/launch", data={"csrf": form_csrf(home)})
        assert refused.status_code == 403 and "needs the organiser role" in refused.text
        assert counts(sample) == (0, 0) and get_wave(sample, "MPs")["status"] == "draft"

        organiser = requests.Session()
        site.login(organiser, "organiser@union.example")
        home = organiser.get(f"{site.base}/staff/").text
        assert f'action="/staff/waves/{wave_id}/launch"' in home
        no_token = organiser.post(f"{site.base}/staff/waves/{wave_id}/launch", data={})
        assert no_token.status_code == 400 and counts(sample) == (0, 0)
        done = organiser.post(
            f"{site.base}/staff/waves/{wave_id}/launch", data={"csrf": form_csrf(home)}, allow_redirects=False
        )
        assert done.status_code == 303 and done.headers["location"] == "/staff/"
        # The same 40 letters and invitations as `campaign wave launch MPs` makes on the sample.
        assert counts(sample) == (40, 40) and get_wave(sample, "MPs")["status"] == "launched"
        [launched] = events(sample, "wave.launch")
        assert launched["by"] == "organiser@union.example" and launched["created"] == 40
        # A second click changes nothing; the dashboard now shows the wave's funnel.
        again = organiser.post(f"{site.base}/staff/waves/{wave_id}/launch", data={"csrf": form_csrf(home)})
        assert again.status_code == 200 and counts(sample) == (40, 40)
        assert "Not launched yet" not in again.text and "Letters of MPs at each step" in again.text
