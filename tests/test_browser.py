"""The member journey in real Chromium (Debian's, driven by Playwright): what a member sees and does."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import ROOT, unavailable
from playwright.sync_api import expect
from pypdf import PdfReader
from sqlalchemy import select
from test_waves import EMPLOYER_WAVE, MP_WAVE, SETTINGS, load_sample
from test_web import Site

from engine.followup.drafts import draft_letter, load_wave
from engine.letters.launch import launch_wave
from engine.letters.links import link_token
from engine.letters.waves import create_wave
from engine.reports.campaign import funnel
from engine.store.db import init_db, open_engine
from engine.store.models import letter_table, outbox_table, utcnow
from engine.web.accounts import add_user
from engine.web.staff import COLUMNS

CHROMIUM = os.environ.get("CAMPAIGN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def site(tmp_path):
    """The sample data launched on a SQLite file: the journey is about the browser, and the
    pages' database work runs on both backends in test_web.py."""
    engine = open_engine(f"sqlite:///{tmp_path}/browser.db")
    init_db(engine)
    load_sample(engine, tmp_path)
    create_wave(engine, "MPs", MP_WAVE, SETTINGS)
    launch_wave(engine, "MPs", SETTINGS)
    with Site(engine) as running:
        yield running
    engine.dispose()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    tab = context.new_page()
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def test_open_edit_send_and_come_back(site, page):
    page.goto(site.link("M100001"))
    assert page.get_by_role("heading", level=1).inner_text() == "Your letter to Harriet Alden MP"
    letter = page.get_by_label("Your letter")
    assert "Dear Ms Alden," in letter.input_value()
    letter.fill(
        "Dear Ms Alden,\n\nAt my school two colleagues left this year because of inspection stress.\n\nAisha Khan"
    )
    assert "BR8 7RE" in page.get_by_label("Your home address").input_value()
    with page.expect_navigation():
        page.get_by_role("button", name="Send it for me").click()
    assert "Your letter is on its way to Harriet Alden MP" in page.content()
    page.reload()
    assert page.get_by_role("button", name="Send it for me").count() == 0
    assert "two colleagues left this year" in page.inner_text(".letter-text")
    assert site.letter("M100001")["state"] == "queued"


def test_send_it_myself(site, page):
    page.goto(site.link("M100002"))
    assert page.get_by_role("button", name="Download PDF").count() == 1
    with page.expect_navigation():
        page.get_by_role("button", name="I've sent it myself").click()
    assert "You sent your letter yourself" in page.content()
    assert site.letter("M100002")["state"] == "self_sent"


def test_not_for_me(site, page):
    page.goto(site.link("M100003"))
    with page.expect_navigation():
        page.get_by_role("button", name="Not for me").click()
    assert "You chose not to send your letter" in page.content()
    assert site.letter("M100003")["state"] == "opted_out"


def test_a_bad_link(site, page):
    response = page.goto(f"{site.base}/l/this-is-not-a-link")
    assert response.status == 404
    assert page.get_by_role("heading", level=1).inner_text() == "This link does not work"


def test_missing_address_is_explained_on_the_page(site, page):
    page.goto(site.link("M100005"))
    page.get_by_label("Your home address").fill(" ")
    # The browser's own check would stop an empty field; a blank one reaches the server.
    page.get_by_role("button", name="Send it for me").click()
    assert page.get_by_role("alert").inner_text().startswith("Your home address is needed")
    assert site.letter("M100005")["state"] == "drafted"


def test_readable_at_320_pixels_and_usable_by_keyboard(site, browser):
    context = browser.new_context(viewport={"width": 320, "height": 640})
    tab = context.new_page()
    try:
        tab.goto(site.link("M100006"))
        assert tab.evaluate("document.documentElement.scrollWidth") <= 320
        headings = tab.eval_on_selector_all("h1, h2", "els => els.map(e => e.tagName)")
        assert headings[0] == "H1" and set(headings[1:]) == {"H2"}
        for field in tab.query_selector_all("textarea"):
            assert tab.query_selector(f"label[for={field.get_attribute('id')}]") is not None
        tab.focus("#text")
        focused = []
        for _ in range(4):
            tab.keyboard.press("Tab")
            focused.append(tab.evaluate("document.activeElement.textContent || document.activeElement.id"))
        assert "Send it for me" in focused
    finally:
        context.close()


def test_opting_out_or_sending_it_myself_asks_for_no_address(site, page):
    """Issue 12, item 7: only "Send it for me" needs the home address."""
    for number, button, state in (
        ("M100003", "Not for me", "opted_out"),
        ("M100002", "I've sent it myself", "self_sent"),
    ):
        page.goto(site.link(number))
        page.get_by_label("Your home address").fill("")
        with page.expect_navigation():
            page.get_by_role("button", name=button).click()
        assert site.letter(number)["state"] == state
        assert page.get_by_role("alert").count() == 0


def test_unfilled_prompts_are_listed_before_sending_and_send_anyway_sends(site, page):
    """Issue 12, item 1: "you have not filled in 1 prompt: send anyway / edit"."""
    page.goto(site.link("M100001"))
    with page.expect_navigation():
        page.get_by_role("button", name="Send it for me").click()
    warning = page.get_by_role("alert")
    expect(warning).to_be_in_viewport()  # the member sees it without scrolling to it
    assert warning.inner_text().startswith("You have not filled in 1 prompt:")
    assert "[Why this matters in your school" in warning.inner_text()
    assert warning.get_by_role("link", name="Edit my letter").count() == 1
    assert site.letter("M100001")["state"] == "drafted"
    with page.expect_navigation():
        warning.get_by_role("button", name="Send anyway").click()
    assert site.letter("M100001")["state"] == "queued"
    assert "Your letter is on its way to Harriet Alden MP" in page.content()


def test_the_pdf_i_download_has_my_changes(site, page):
    """Issue 12, item 2: the PDF is the letter as the member changed it, saved on the way."""
    page.goto(site.link("M100004"))
    letter = page.get_by_label("Your letter")
    edited = letter.input_value().replace(
        "I am writing to ask", "Our head teacher resigned in June. I am writing to ask"
    )
    letter.fill(edited)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download PDF").click()
    text = " ".join(page_.extract_text() for page_ in PdfReader(download.value.path()).pages).replace(
        "\n", " "
    )
    assert "Our head teacher resigned in June." in text
    assert "Why this matters" not in text
    assert "resigned in June" in site.letter("M100004")["final_text"]


def test_my_saved_changes_are_there_when_i_come_back(site, page):
    page.goto(site.link("M100005"))
    page.get_by_label("Your letter").fill("Dear Mr Brennan,\n\nMy words, kept.\n\nLee")
    with page.expect_navigation():
        page.get_by_role("button", name="Save my changes").click()
    page.reload()
    assert page.get_by_label("Your letter").input_value() == "Dear Mr Brennan,\n\nMy words, kept.\n\nLee\n"
    assert page.get_by_role("status").filter(has_text="Your changes are saved.").count() == 1
    assert site.letter("M100005")["state"] == "drafted"


def test_after_sending_there_is_one_thank_you(site, page):
    """Issue 12, item 10: one thank-you box, and it says what really happened."""
    page.goto(site.link("M100006") + "?done=send")
    assert not [t for t in page.get_by_role("status").all_inner_texts() if "Thank you" in t]
    page.get_by_label("Your letter").fill("Dear MP,\n\nPlease act on inspections.\n")
    with page.expect_navigation():
        page.get_by_role("button", name="Send it for me").click()
    boxes = [t for t in page.get_by_role("status").all_inner_texts() if "Thank you" in t]
    assert len(boxes) == 1 and "is on its way to" in boxes[0]


def check_letter_reads_in_full_and_choices_are_explained(tab) -> None:
    letter = tab.get_by_label("Your letter")
    # The whole letter shows on the page: its box does not scroll.
    assert letter.evaluate("el => el.scrollHeight <= el.clientHeight + 2")
    letter_bottom = letter.bounding_box()["y"] + letter.bounding_box()["height"]
    for name in ("Send it for me", "I've sent it myself", "Not for me"):
        button = tab.get_by_role("button", name=name, exact=True)
        explanation = tab.locator(f"#{button.get_attribute('aria-describedby')}")
        assert explanation.inner_text().strip(), name
        b, e = button.bounding_box(), explanation.bounding_box()
        assert b["y"] > letter_bottom, f"{name} comes after the letter"
        # Right next to its button: beside it, or just under it.
        assert 0 <= e["y"] - b["y"] < b["height"] + 24, f"{name}: its explanation is not next to it"


def test_on_a_phone_the_whole_letter_reads_on_the_page_and_each_choice_is_explained_beside_it(site, page):
    """Issue 12, item 11, at 390 x 844."""
    page.goto(site.link("M100001"))
    check_letter_reads_in_full_and_choices_are_explained(page)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "member-page-phone.png"), full_page=True)


def test_on_a_desktop_the_whole_letter_reads_on_the_page_and_each_choice_is_explained_beside_it(
    site, browser
):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    try:
        tab.goto(site.link("M100001"))
        check_letter_reads_in_full_and_choices_are_explained(tab)
        SCREENSHOTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(SCREENSHOTS / "member-page-desktop.png"), full_page=True)
    finally:
        context.close()


def test_open_in_my_email_hands_over_my_changed_letter(site, page):
    """Issue 12, item 2: "Open in my email" saves the text first, then opens it in the mail program."""
    page.goto(site.link("M100001"))
    letter = page.get_by_label("Your letter")
    letter.fill(
        letter.input_value().replace("I am writing to ask", "Since our May inspection, I am writing to ask")
    )
    with page.expect_request(lambda request: request.url.startswith("mailto:")) as handed:
        page.get_by_role("button", name="Open in my email").click()
    body = unquote(handed.value.url.split("&body=", 1)[1])
    assert "Since our May inspection, I am writing to ask" in body
    assert "Why this matters" not in body
    assert "Since our May inspection" in site.letter("M100001")["final_text"]
    # The member is still on their page, to come back and choose "I've sent it myself".
    assert page.get_by_role("button", name="I've sent it myself").count() == 1


def test_after_a_reply_my_one_link_shows_where_things_stand_and_my_follow_up(tmp_path, browser):
    """Items 3 and 8: the first letter's link opens the follow-up too, with where each letter stands."""
    engine = open_engine(f"sqlite:///{tmp_path}/followup.db")
    init_db(engine)
    load_sample(engine, tmp_path)
    create_wave(engine, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(engine, "Employers", SETTINGS)
    lt = letter_table.c
    with engine.begin() as conn:
        first = conn.execute(select(letter_table).where(lt.target_email.is_not(None)).order_by(lt.id)).first()
        conn.execute(
            letter_table.update()
            .where(lt.id == first.id)
            .values(
                state="replied", sent_at=utcnow() - timedelta(days=9), replied_at=utcnow() - timedelta(days=2)
            )
        )
        letter = dict(conn.execute(select(letter_table).where(lt.id == first.id)).one()._mapping)
        follow_up = draft_letter(
            conn, load_wave(conn, letter["wave_id"], SETTINGS), letter, "follow_up", SETTINGS, utcnow()
        )
    context = browser.new_context(viewport={"width": 390, "height": 844})
    tab = context.new_page()
    try:
        with Site(engine) as site:
            tab.goto(f"{site.base}/l/{link_token(SETTINGS.secret, letter['link_nonce'])}")
            target = letter["target_name"]
            expect(tab.get_by_role("heading", level=1)).to_have_text(f"Your letters to {target}")
            standing = tab.locator(".standing")
            expect(standing).to_contain_text(f"Your first letter was sent to {target} on")
            expect(standing).to_contain_text(f"{target} replied on")
            expect(standing).to_contain_text("Your follow-up is ready for you to check")
            assert "Dear" in tab.get_by_label("Your follow-up").input_value()
            tab.get_by_role("button", name="Send it for me").click()
            expect(tab.locator(".standing")).to_contain_text(f"Your follow-up is on its way to {target}")
    finally:
        context.close()
        engine.dispose()
    with engine.connect() as conn:
        assert conn.execute(select(lt.state).where(lt.id == follow_up["id"])).scalar_one() == "queued"


def test_an_expired_link_offers_a_new_one_and_then_works(site, page):
    """Item 9: no dead end; the new link goes to the address on file only, and the same link works."""
    url = site.link("M100001")
    with site.engine.begin() as conn:
        conn.execute(outbox_table.update().values(created_at=utcnow() - timedelta(days=31)))
        conn.execute(letter_table.update().values(token_expires_at=utcnow() - timedelta(days=1)))
    page.goto(url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your link ran out")
    assert "Harriet Alden" not in page.content()  # an expired page shows nobody's letter
    page.get_by_role("button", name="Send me a new link").click()
    expect(
        page.get_by_text("If we have an email address for you, a new link is on its way to it")
    ).to_be_visible()
    with site.engine.connect() as conn:
        latest = conn.execute(
            select(outbox_table.c.to_addr)
            .where(outbox_table.c.kind == "invitation")
            .order_by(outbox_table.c.id.desc())
        ).first()
    assert latest.to_addr == "Aisha Khan <aisha.khan@members.example.org>"
    page.goto(url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Your letter to Harriet Alden MP")


PLEDGE_QUESTION = "I will remove our inspection grade from our signage and letterheads"


@pytest.fixture
def pledge_site(tmp_path):
    """A pledge wave launched on the sample data, with share links configured."""
    from dataclasses import replace

    from engine.letters.waves import WaveSpec

    engine = open_engine(f"sqlite:///{tmp_path}/pledge.db")
    init_db(engine)
    load_sample(engine, tmp_path)
    spec = WaveSpec(target="pledge", invite="pledge-invitation", question=PLEDGE_QUESTION)
    create_wave(engine, "Signage", spec, SETTINGS)
    launch_wave(engine, "Signage", SETTINGS)
    settings = replace(SETTINGS, share_url="https://union.example/pause-ofsted")
    with Site(engine, settings=settings) as running:
        yield running
    engine.dispose()


def test_pledge_then_change_my_mind_on_a_phone_without_javascript(pledge_site, browser):
    """Issue 13, wave 6: the question, "I pledge" and "Not for me", answerable again later."""
    context = browser.new_context(viewport={"width": 320, "height": 640}, java_script_enabled=False)
    tab = context.new_page()
    try:
        tab.goto(pledge_site.link("M100001"))
        assert tab.get_by_role("heading", level=1).inner_text() == "Will you make this pledge?"
        assert tab.inner_text("#question") == PLEDGE_QUESTION
        assert tab.get_by_role("link", name="Share by WhatsApp").count() == 0
        with tab.expect_navigation():
            tab.get_by_role("button", name="I pledge").click()
        assert "You have pledged on " in tab.inner_text("#status")
        assert "You can change your answer below" in tab.inner_text("#status")
        assert tab.get_by_role("button", name="I pledge").is_disabled()
        assert (
            tab.get_by_role("link", name="Share by WhatsApp")
            .get_attribute("href")
            .startswith("https://wa.me/?text=")
        )
        assert pledge_site.letter("M100001")["state"] == "pledged"
        # Later, the member changes their mind on the same page.
        tab.goto(pledge_site.link("M100001"))
        with tab.expect_navigation():
            tab.get_by_role("button", name="Not for me").click()
        assert "You said this pledge is not for you" in tab.inner_text("#status")
        assert tab.get_by_role("link", name="Share by WhatsApp").count() == 0
        assert pledge_site.letter("M100001")["state"] == "declined"
        with tab.expect_navigation():
            tab.get_by_role("button", name="I pledge").click()
        assert pledge_site.letter("M100001")["state"] == "pledged"
    finally:
        context.close()


def test_the_pledge_page_fits_a_phone_and_works_by_keyboard(pledge_site, browser):
    context = browser.new_context(viewport={"width": 320, "height": 640})
    tab = context.new_page()
    try:
        tab.goto(pledge_site.link("M100002"))
        assert tab.evaluate("document.documentElement.scrollWidth") <= 320
        for name in ("I pledge", "Not for me"):
            box = tab.get_by_role("button", name=name).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 320
        tab.keyboard.press("Tab")
        focused = []
        for _ in range(6):
            focused.append(tab.evaluate("document.activeElement.textContent"))
            if focused[-1] == "I pledge":
                break
            tab.keyboard.press("Tab")
        assert focused[-1] == "I pledge"
        with tab.expect_navigation():
            tab.keyboard.press("Enter")
        assert pledge_site.letter("M100002")["state"] == "pledged"
        assert tab.evaluate("document.documentElement.scrollWidth") <= 320  # share links wrap
    finally:
        context.close()


def test_staff_sign_in_see_the_waves_and_sign_out(site, page):
    add_user(site.engine, "organiser@union.example", "organiser", "correct horse battery staple")
    page.goto(f"{site.base}/staff/")
    # No session: the dashboard sends the browser to the sign-in form.
    expect(page).to_have_url(f"{site.base}/staff/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff sign-in")
    page.get_by_label("Email address").fill("Organiser@union.example")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Waves")
    expect(page.get_by_text("Signed in as organiser@union.example (organiser)")).to_be_visible()
    counts = {stage["stage"]: stage["count"] for stage in funnel(site.engine, "MPs")["funnel"]}
    assert counts["letters"] > 0 and counts["invited"] == 0
    wave = page.get_by_role("region", name="MPs")
    table = wave.get_by_role("table", name="Letters of MPs at each step")
    assert table.get_by_role("rowheader").all_inner_texts() == [label for _, label in COLUMNS]
    for key, label in COLUMNS:
        row = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name=label, exact=True))
        assert row.get_by_role("cell").first.inner_text() == str(counts[key])
    # A phone-sized window: the page itself never scrolls sideways (the table may, in its box).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-waves.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{site.base}/staff/login")
    # Back to the dashboard: the browser asks again (no-store), and the session is gone.
    page.go_back()
    expect(page).to_have_url(f"{site.base}/staff/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Staff sign-in")
    assert "Signed in as" not in page.content()
