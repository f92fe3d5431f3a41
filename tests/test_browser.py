"""The member journey in real Chromium (Debian's, driven by Playwright): what a member sees and does."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, unavailable
from test_waves import MP_WAVE, SETTINGS, load_sample
from test_web import Site

from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.store.db import init_db, open_engine

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
    page.get_by_role("button", name="Send it for me").click()
    page.wait_for_url("**?done=send")
    assert "Your letter is on its way to Harriet Alden MP" in page.content()
    page.reload()
    assert page.get_by_role("button", name="Send it for me").count() == 0
    assert "two colleagues left this year" in page.inner_text(".letter-text")
    assert site.letter("M100001")["state"] == "queued"


def test_send_it_myself(site, page):
    page.goto(site.link("M100002"))
    assert page.get_by_role("link", name="Download the letter as a PDF").count() == 1
    page.get_by_role("button", name="I've sent it myself").click()
    page.wait_for_url("**?done=self")
    assert "Thank you for sending your letter yourself" in page.content()
    assert site.letter("M100002")["state"] == "self_sent"


def test_not_for_me(site, page):
    page.goto(site.link("M100003"))
    page.get_by_role("button", name="Not for me").click()
    page.wait_for_url("**?done=optout")
    assert "You chose not to send this letter" in page.content()
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
