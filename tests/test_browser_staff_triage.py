"""Sorting replies in real Chromium at phone size: a forward the engine could not match on its
own, matched by staff to the member's letter, whose follow-up then waits on the member's page;
a viewer refused a change; a paper reply logged with a scanned PDF."""

from __future__ import annotations

import io

import pytest
from playwright.sync_api import expect
from pypdf import PdfReader
from sqlalchemy import func, select
from test_browser import SCREENSHOTS, browser, page  # noqa: F401
from test_waves import SETTINGS, load_sample
from test_web import Site

from engine.inbox.ingest import Ingester
from engine.inbox.staff import list_messages
from engine.letters.confirm import letter_for_member, send_for_me
from engine.letters.launch import launch_wave
from engine.letters.links import link_token
from engine.letters.waves import WaveSpec, create_wave
from engine.mail.send import send_outbox
from engine.mail.smtp import FolderTransport
from engine.store.db import init_db, open_engine
from engine.store.models import event_table, inbound_table, letter_table, member_table, outbox_table
from engine.web.accounts import add_user

# ruff: noqa: F811  (the browser and page fixtures are used by naming them)

PASSWORD = "correct horse battery staple"
STAFF = "caseworker@union.example"
VIEWER = "viewer@union.example"
WAVE = "Employers"
# A member forwards their employer's answer from a home address we do not know, and the
# quoted part has lost the letter's reference: nothing proves which letter it answers.
FORWARD = """\
Message-ID: <home-forward-0001@personal-mail.example>
Date: Wed, 18 Nov 2026 20:02:11 +0000
From: {member} <home.inbox.0001@personal-mail.example>
To: organising@union.example
Subject: Fwd: RE: our school and inspection stress
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

Sending this from home, sorry: the reply from HR.

---------- Forwarded message ---------
From: Jo Pike <jo.pike@{domain}>
Date: Tue, 17 Nov 2026 at 10:40
Subject: RE: our school and inspection stress
To: {member} <home.inbox.0001@personal-mail.example>


Dear colleague,

I am afraid we are not in a position to support the request in your letter at this time.

Kind regards,
Jo Pike
HR Business Partner
"""
QUESTION = """\
Message-ID: <question-0002@elsewhere.example>
Date: Thu, 19 Nov 2026 08:15:00 +0000
From: Sam Reader <sam@elsewhere.example>
To: organising@union.example
Subject: <b>Question</b> about the campaign =?utf-8?q?=3Cscript=3E?=
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"

Hello, how do I join the union? <img src=x onerror=alert(1)>
"""


@pytest.fixture
def site(tmp_path):
    """An employer wave whose first three letters went, on a SQLite file, with the app running."""
    engine = open_engine(f"sqlite:///{tmp_path}/triage.db")
    init_db(engine)
    load_sample(engine, tmp_path)
    create_wave(
        engine, WAVE, WaveSpec(target="employer", letter="employer-wellbeing", invite="invitation"), SETTINGS
    )
    launch_wave(engine, WAVE, SETTINGS)
    with engine.connect() as conn:
        numbers = (
            conn.execute(
                select(member_table.c.membership_no)
                .join(letter_table, letter_table.c.member_id == member_table.c.id)
                .where(letter_table.c.target_email.is_not(None))
                .order_by(member_table.c.id)
                .limit(3)
            )
            .scalars()
            .all()
        )
    for number in numbers:
        found = letter_for_member(engine, WAVE, number)
        assert send_for_me(engine, SETTINGS, found, found.text, None)
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "out"), rate=10_000, sleep=lambda s: None)
    add_user(engine, STAFF, "staff", PASSWORD)
    add_user(engine, VIEWER, "viewer", PASSWORD)
    with Site(engine) as running:
        running.numbers = numbers
        yield running
    engine.dispose()


def letter_of(engine, number: str, kind: str = "letter") -> dict:
    return dict(letter_for_member(engine, WAVE, number, kind).letter)


def sign_in(tab, site, email: str) -> None:
    tab.goto(f"{site.base}/staff/login")
    tab.get_by_label("Email address").fill(email)
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.get_by_role("heading", level=1)).to_have_text("Waves")


def fits_a_phone(tab) -> bool:
    return tab.evaluate("document.documentElement.scrollWidth") <= 390


def database(engine) -> tuple:
    with engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(select(inbound_table).order_by(inbound_table.c.id))],
            [tuple(r) for r in conn.execute(select(letter_table).order_by(letter_table.c.id))],
            conn.execute(select(func.count()).select_from(outbox_table)).scalar_one(),
            conn.execute(select(func.count()).select_from(event_table)).scalar_one(),
        )


def test_staff_match_a_forward_the_engine_could_not_and_the_member_sees_their_follow_up(site, page, browser):
    engine = site.engine
    letter = letter_of(engine, site.numbers[0])
    with engine.connect() as conn:
        member = conn.execute(
            select(member_table.c.first_name, member_table.c.last_name).where(
                member_table.c.id == letter["member_id"]
            )
        ).one()
    name = f"{member.first_name} {member.last_name}"
    domain = letter["target_email"].rpartition("@")[2]
    ingester = Ingester(engine, SETTINGS)
    forward = ingester.record(FORWARD.format(member=name, domain=domain).encode(), "eml")
    question = ingester.record(QUESTION.encode(), "eml")
    assert {forward, question} <= {row["id"] for row in list_messages(engine, unmatched=True)}
    assert letter_of(engine, site.numbers[0])["state"] == "sent"

    sign_in(page, site, STAFF)
    page.get_by_role("link", name="Replies to sort").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Replies to sort")
    queue = page.get_by_role("table")
    expect(queue.get_by_role("rowheader")).to_have_count(2)
    # The waiting longest first; hostile subjects are text, never markup.
    assert queue.get_by_role("rowheader").all_inner_texts()[0].startswith("Fwd: RE: our school")
    expect(queue.get_by_role("link", name="<b>Question</b> about the campaign <script>")).to_be_visible()
    assert page.locator("table b, table script").count() == 0
    assert fits_a_phone(page)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-triage.png"), full_page=True)

    page.get_by_role("link", name="Fwd: RE: our school and inspection stress").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Message {forward}: reply")
    expect(page.get_by_text("Jo Pike <jo.pike@")).to_be_visible()
    expect(page.get_by_text("(found in the forwarded message)")).to_be_visible()
    expect(page.locator(".reply-text")).to_contain_text("not in a position to support")
    # The engine's likeliest letter first: the member's own, by name and by employer's domain.
    first = page.locator("ul.suggestions li").first
    expect(first).to_contain_text(letter["reference"])
    expect(first).to_contain_text("sent by someone with its member's name")
    expect(page.get_by_label("Reference, member's name or employer")).to_be_visible()
    expect(page.get_by_role("button", name="Not about any letter")).to_be_visible()
    assert fits_a_phone(page)
    page.screenshot(path=str(SCREENSHOTS / "staff-reply.png"), full_page=True)
    first.get_by_role("button", name="This is the letter").click()

    expect(page.get_by_role("status").first).to_have_text(
        f"Matched to letter {letter['reference']}, which is now replied."
    )
    expect(page.locator("[data-letter-state]")).to_contain_text(
        f"{letter['reference']} to {letter['target_name']}"
    )
    assert page.locator("[data-letter-state]").get_attribute("data-letter-state") == "replied"
    expect(page.get_by_role("combobox", name="Outcome")).to_have_value("refusal")
    expect(page.get_by_role("button", name="Undo this match")).to_be_visible()
    assert fits_a_phone(page)
    assert letter_of(engine, site.numbers[0])["state"] == "replied"
    follow_up = letter_of(engine, site.numbers[0], "follow_up")
    assert follow_up["state"] == "drafted"

    # The member's own link now shows the follow-up, ready to check.
    member_page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    member_page.goto(f"{site.base}/l/{link_token(SETTINGS.secret, letter['link_nonce'])}")
    expect(member_page.get_by_text("Your follow-up is ready for you to check")).to_be_visible()
    expect(member_page.get_by_text(f"Reference: {follow_up['reference']}").first).to_be_visible()
    # It quotes the employer's answer that staff matched.
    assert "not in a position to support" in member_page.locator("#text").input_value()
    member_page.context.close()

    # A viewer, in a browser of their own, may look at the other waiting message but not sort it.
    viewer_context = browser.new_context(viewport={"width": 390, "height": 844})
    viewer = viewer_context.new_page()
    try:
        sign_in(viewer, site, VIEWER)
        viewer.goto(f"{site.base}/staff/triage")
        viewer.get_by_role("link", name="<b>Question</b> about the campaign <script>").click()
        expect(viewer.get_by_text("You can look at this message but not change anything")).to_be_visible()
        expect(viewer.locator(".reply-text")).to_have_text(
            "Hello, how do I join the union? <img src=x onerror=alert(1)>"
        )
        assert viewer.locator("main img:not(.logo)").count() == 0
        before = database(engine)
        viewer.get_by_role("button", name="Not about any letter").click()
        expect(viewer.get_by_role("heading", level=1)).to_have_text("Not for your role")
        expect(viewer.get_by_text("you are signed in as viewer")).to_be_visible()
        assert database(engine) == before
        assert question in {row["id"] for row in list_messages(engine, unmatched=True)}
    finally:
        viewer_context.close()


def test_staff_log_a_paper_reply_with_its_scan(site, page, tmp_path):
    engine = site.engine
    letter = letter_of(engine, site.numbers[1])
    scan = tmp_path / "reply-from-governors.pdf"
    # A real one-page PDF, as a scanner makes it (a PDF reader opens it).
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    scan.write_bytes(buffer.getvalue())
    assert len(PdfReader(scan).pages) == 1

    sign_in(page, site, STAFF)
    page.goto(f"{site.base}/staff/triage")
    page.get_by_role("link", name="log a paper reply").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Log a paper reply")
    page.get_by_label("Reference").fill(letter["reference"])
    page.get_by_label("Date received").fill("20/11/2026")
    page.get_by_label("Written by").fill("Chair of Governors")
    page.get_by_label("What it says").fill("The governors will not support this request.")
    page.get_by_label("Scan").set_input_files(str(scan))
    assert fits_a_phone(page)
    page.get_by_role("button", name="Log the paper reply").click()

    expect(page.get_by_role("status").first).to_have_text(
        f"Paper reply logged on letter {letter['reference']}, which is now replied."
    )
    expect(page.get_by_text("reply-from-governors.pdf")).to_be_visible()
    expect(page.get_by_text("(on paper)")).to_be_visible()
    with engine.connect() as conn:
        row = conn.execute(select(inbound_table).where(inbound_table.c.letter_id == letter["id"])).one()
    assert (row.source, row.raw, row.attachment_name) == (
        "paper",
        scan.read_bytes(),
        "reply-from-governors.pdf",
    )
    assert letter_of(engine, site.numbers[1])["state"] == "replied"
