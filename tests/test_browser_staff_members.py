"""Staff in real Chromium (Debian's, Playwright): the dashboard's chart, finding a member, their
page on a phone, and exporting their record with the button."""

from __future__ import annotations

import json

from playwright.sync_api import expect
from test_browser import SCREENSHOTS, browser, page, site  # noqa: F401  (fixtures)

from engine.members.importer import get_member
from engine.web.accounts import add_user

PASSWORD = "correct horse battery staple"


def sign_in(page, base: str, email: str) -> None:  # noqa: F811
    page.goto(f"{base}/staff/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Waves")


def test_the_dashboard_draws_each_waves_chart(site, page):  # noqa: F811
    add_user(site.engine, "viewer@union.example", "viewer", PASSWORD)
    sign_in(page, site.base, "viewer@union.example")
    chart = page.get_by_role("region", name="MPs").get_by_role("img", name="Chart of MPs", exact=False)
    expect(chart).to_be_visible()
    # The browser loaded and drew the SVG (a broken image has no natural width), scaled to the phone.
    chart.element_handle().wait_for_element_state("stable")
    page.wait_for_function("img => img.complete", arg=chart.element_handle(), timeout=15000)
    assert chart.evaluate("img => img.naturalWidth") > 0
    assert 300 <= chart.bounding_box()["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_staff_find_a_member_and_export_their_record_on_a_phone(site, page):  # noqa: F811
    add_user(site.engine, "staff@union.example", "staff", PASSWORD)
    member = get_member(site.engine, "M100001")
    sign_in(page, site.base, "staff@union.example")
    page.get_by_role("link", name="Members").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Members")
    page.get_by_label("Membership number, name or email address").fill(member["last_name"])
    page.get_by_role("button", name="Find").click()
    page.get_by_role("link", name=f"{member['first_name']} {member['last_name']}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"{member['first_name']} {member['last_name']}")
    letters = page.get_by_role("table", name="Letters of member M100001, newest wave first")
    expect(letters.get_by_role("row")).to_have_count(2)  # the header and the MP letter
    expect(letters).to_contain_text("MPs")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-member.png"), full_page=True)

    with page.expect_download() as download:
        page.get_by_role("button", name="Export everything we hold").click()
    assert download.value.suggested_filename == "member-M100001.json"
    record = json.loads(download.value.path().read_text())
    assert record["member"]["email"] == member["email"]
    assert len(record["letters"]) == 1 and record["letters"][0]["wave_id"]


def test_a_viewer_sees_a_member_but_has_no_export_button(site, page):  # noqa: F811
    add_user(site.engine, "viewer@union.example", "viewer", PASSWORD)
    sign_in(page, site.base, "viewer@union.example")
    page.goto(f"{site.base}/staff/members/M100001")
    expect(page.get_by_text("Exporting a member's record needs the staff role")).to_be_visible()
    assert page.get_by_role("button", name="Export everything we hold").count() == 0
