"""Members on the staff pages: finding a member, their page with their letters, the export button
(a subject access request from the browser) and each wave's chart on the dashboard."""

from __future__ import annotations

import json

import requests
from sqlalchemy import select
from test_staff import PASSWORD, StaffSite, events, form_csrf
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401  (the sample-data fixture)

from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.members.importer import get_member
from engine.members.rights import forget_member
from engine.reports.members import find_members, member_overview
from engine.store.models import letter_table, member_table, wave_table
from engine.web.accounts import add_user


def first_with_letter(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(
            select(member_table.c.membership_no)
            .join(letter_table, letter_table.c.member_id == member_table.c.id)
            .order_by(member_table.c.id)
        ).first()[0]


def test_members_are_found_by_number_name_or_email_and_never_once_forgotten(sample):  # noqa: F811
    member = get_member(sample, "M100001")
    by_number = find_members(sample, " M100001 ")
    assert [m["membership_no"] for m in by_number] == ["M100001"]
    by_name = find_members(sample, f"{member['first_name'][:3].lower()} ")
    assert "M100001" in [m["membership_no"] for m in by_name]
    full = find_members(sample, f"{member['first_name']}  {member['last_name']}".upper())
    assert "M100001" in [m["membership_no"] for m in full]
    assert [m["membership_no"] for m in find_members(sample, member["email"].upper())] == ["M100001"]
    # LIKE's wildcards are only characters: "%" finds no one rather than everyone.
    assert find_members(sample, "%") == [] and find_members(sample, "_") == []
    assert find_members(sample, "   ") == []
    assert len(find_members(sample, "e", limit=5)) == 5
    forget_member(sample, "M100001")
    assert find_members(sample, "M100001") == []
    assert member_overview(sample, "M100001")["forgotten"] is True


def test_a_members_page_shows_their_letters_and_only_staff_may_export_their_record(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    number = first_with_letter(sample)
    member = get_member(sample, number)
    with sample.connect() as conn:
        reference = conn.execute(
            select(letter_table.c.reference).where(letter_table.c.member_id == member["id"])
        ).scalar_one()
    add_user(sample, "viewer@union.example", "viewer", PASSWORD)
    add_user(sample, "staff@union.example", "staff", PASSWORD)
    with StaffSite(sample) as site:
        viewer = requests.Session()
        site.login(viewer, "viewer@union.example")
        found = viewer.get(f"{site.base}/staff/members", params={"q": member["last_name"]})
        assert found.status_code == 200 and f'href="/staff/members/{number}"' in found.text
        page = viewer.get(f"{site.base}/staff/members/{number}")
        assert page.status_code == 200
        assert f"<h1>{member['first_name']} {member['last_name']}</h1>" in page.text
        assert reference in page.text and "MPs" in page.text
        # A viewer sees no export button, and posting the form anyway is refused.
        assert "Export everything we hold" not in page.text
        refused = viewer.post(
            f"{site.base}/staff/members/{number}/export", data={"csrf": form_csrf(page.text)}
        )
        assert refused.status_code == 403 and "needs the staff role" in refused.text
        assert events(sample, "members.export") == []

        clerk = requests.Session()
        site.login(clerk, "staff@union.example")
        page = clerk.get(f"{site.base}/staff/members/{number}")
        assert "Export everything we hold" in page.text
        assert (
            clerk.post(f"{site.base}/staff/members/{number}/export", data={"csrf": "wrong"}).status_code
            == 400
        )
        download = clerk.post(
            f"{site.base}/staff/members/{number}/export", data={"csrf": form_csrf(page.text)}
        )
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/json"
        assert download.headers["content-disposition"] == f'attachment; filename="member-{number}.json"'
        assert download.headers["cache-control"] == "no-store"
        record = download.json()
        assert record["member"]["email"] == member["email"]
        assert [letter["reference"] for letter in record["letters"]] == [reference]
        # Who took the record is audited: the staff member, and the member by number only.
        assert events(sample, "members.export") == [{"membership_no": number, "by": "staff@union.example"}]

        missing = clerk.get(f"{site.base}/staff/members/NO-SUCH")
        assert missing.status_code == 404 and "No member with membership number" in missing.text


def test_hostile_member_fields_are_shown_as_text(sample):  # noqa: F811
    with sample.begin() as conn:
        conn.execute(
            member_table.update()
            .where(member_table.c.membership_no == "M100001")
            .values(first_name="<script>alert(1)</script>", last_name='=HYPERLINK("x")')
        )
    add_user(sample, "viewer@union.example", "viewer", PASSWORD)
    with StaffSite(sample) as site:
        viewer = requests.Session()
        site.login(viewer, "viewer@union.example")
        page = viewer.get(f"{site.base}/staff/members/M100001").text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        found = viewer.get(f"{site.base}/staff/members", params={"q": "<script>"}).text
        assert "&lt;script&gt;" in found and "<script>" not in found


def test_a_forgotten_members_page_holds_nothing_about_them(sample):  # noqa: F811
    member = get_member(sample, "M100001")
    forget_member(sample, "M100001")
    add_user(sample, "staff@union.example", "staff", PASSWORD)
    with StaffSite(sample) as site:
        clerk = requests.Session()
        site.login(clerk, "staff@union.example")
        page = clerk.get(f"{site.base}/staff/members/M100001")
        assert page.status_code == 200 and "asked to be forgotten" in page.text
        assert member["email"] not in page.text and member["last_name"] not in page.text


def test_each_launched_waves_chart_is_on_the_dashboard(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    with sample.connect() as conn:
        wave_id = conn.execute(select(wave_table.c.id).where(wave_table.c.name == "MPs")).scalar_one()
    add_user(sample, "viewer@union.example", "viewer", PASSWORD)
    with StaffSite(sample) as site:
        viewer = requests.Session()
        site.login(viewer, "viewer@union.example")
        home = viewer.get(f"{site.base}/staff/").text
        assert f'src="/staff/waves/{wave_id}/chart.svg"' in home and 'alt="Chart of MPs:' in home
        chart = viewer.get(f"{site.base}/staff/waves/{wave_id}/chart.svg")
        assert chart.status_code == 200 and chart.headers["content-type"] == "image/svg+xml"
        assert chart.text.lstrip().startswith("<?xml") and "<svg" in chart.text
        # The funnel's title names the wave; the second panel is the replies over time.
        assert "MPs: from letters made to follow-ups" in chart.text
        assert "nothing sent yet" in chart.text
        missing = viewer.get(f"{site.base}/staff/waves/9999/chart.svg")
        assert missing.status_code == 404
        assert (
            requests.get(f"{site.base}/staff/waves/{wave_id}/chart.svg", allow_redirects=False).status_code
            == 303
        )
    assert json.dumps(events(sample, "members.export")) == "[]"
