"""Browsing letters and an employer's answers in real Chromium, on a phone-sized window."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from playwright.sync_api import expect
from sqlalchemy import select
from test_browser import SCREENSHOTS, browser, page, site  # noqa: F401
from test_waves import EMPLOYER_WAVE, SETTINGS

from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.store.models import inbound_table, letter_table, member_table, wave_table
from engine.web.accounts import add_user

PASSWORD = "correct horse battery staple"
MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
FRIDAY = datetime(2026, 11, 6, 9, 0, tzinfo=UTC)  # four working days after MONDAY


def answered_employer_wave(engine) -> list[dict]:
    """The sample's employer wave launched beside the MP wave, its first four letters sent and
    three of them answered (with a reply each); returns the wave's letters, oldest first."""
    create_wave(engine, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(engine, "Employers", SETTINGS)
    lt, m = letter_table.c, member_table.c
    with engine.begin() as conn:
        wave = conn.execute(select(wave_table.c.id).where(wave_table.c.name == "Employers")).scalar_one()
        letters = [
            dict(r._mapping)
            for r in conn.execute(
                select(lt.id, lt.reference, lt.target_key, lt.target_name, m.region)
                .join(member_table, m.id == lt.member_id)
                .where(lt.wave_id == wave, lt.kind == "letter")
                .order_by(lt.id)
            )
        ]
        for n, letter in enumerate(letters[:4]):
            answered = n < 3
            conn.execute(
                letter_table.update()
                .where(lt.id == letter["id"])
                .values(
                    state="replied" if answered else "sent",
                    sent_at=MONDAY,
                    replied_at=FRIDAY if answered else None,
                )
            )
            if answered:
                conn.execute(
                    inbound_table.insert().values(
                        dedupe_key=f"<answer-{n}@employer.example>",
                        source="test",
                        raw=b"Subject: RE: Wellbeing\r\n\r\nWe support your request.",
                        kind="reply",
                        letter_id=letter["id"],
                        received_at=FRIDAY,
                        subject="RE: Staff wellbeing",
                        outcome="supportive",
                    )
                )
    return letters


def test_a_viewer_filters_a_waves_letters_and_opens_an_employers_page(site, page):  # noqa: F811
    letters = answered_employer_wave(site.engine)
    add_user(site.engine, "viewer@union.example", "viewer", PASSWORD)
    page.goto(f"{site.base}/staff/")
    page.get_by_label("Email address").fill("viewer@union.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Waves")

    page.get_by_role("region", name="Employers").get_by_role("link", name="See the letters").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Letters of Employers")
    expect(page.get_by_text(f"{len(letters)} letters match; showing 1–{len(letters)}.")).to_be_visible()

    region = letters[0]["region"]
    wanted = [r["reference"] for r in letters[:3] if r["region"] == region]
    page.get_by_label("State").select_option("replied")
    page.get_by_label("Member's region").select_option(region)
    page.get_by_role("button", name="Show").click()
    noun = "letter matches" if len(wanted) == 1 else "letters match"
    expect(page.get_by_text(f"{len(wanted)} {noun}; showing 1–{len(wanted)}.")).to_be_visible()
    table = page.get_by_role("table", name="Letters of Employers that match")
    rows = table.locator("tbody tr")
    assert rows.locator("th").all_inner_texts() == wanted
    for n in range(rows.count()):
        texts = rows.nth(n).get_by_role("cell").all_inner_texts()
        assert texts[2] == "replied" and texts[3] == region, texts
    # The choices stay chosen, so the page says what it shows.
    expect(page.get_by_label("State")).to_have_value("replied")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff-letters.png"), full_page=True)

    first = letters[0]
    rows.first.get_by_role("link", name=first["target_name"]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(first["target_name"])
    summary = page.get_by_role("table", name=f"{first['target_name']} in all launched waves")
    median = summary.get_by_role("row").filter(
        has=page.get_by_role("rowheader", name="Median working days to reply")
    )
    expect(median.get_by_role("cell")).to_have_text("4")
    mine = page.get_by_role("table", name=f"Letters to {first['target_name']}, newest wave first")
    row = mine.get_by_role("row").filter(has=page.get_by_role("rowheader", name=first["reference"]))
    assert row.get_by_role("cell").all_inner_texts() == [
        "Employers",
        row.get_by_role("cell").nth(1).inner_text(),
        "replied",
        "2 Nov 2026",
        "6 Nov 2026",
        "4",
    ]
    replies = page.get_by_role("table", name=f"Replies from or about {first['target_name']}")
    expect(replies.get_by_role("link", name="Open reply").first).to_be_visible()
    expect(replies.get_by_role("cell", name="supportive").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SCREENSHOTS / "staff-target.png"), full_page=True)

    # Every employer and MP, most silent first; a column heading sorts by it.
    page.get_by_role("navigation", name="Staff pages").get_by_role("link", name="Employers and MPs").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Employers and MPs")
    targets = page.get_by_role("table", name=re.compile("^Employers and MPs, most silent first"))
    # Cells: kind, letters, went, replied, silent…; the share of letters that went unanswered falls.
    figures = [row.get_by_role("cell").all_inner_texts() for row in targets.locator("tbody tr").all()]
    shares = [int(f[4]) / int(f[2]) if int(f[2]) else 0 for f in figures]
    assert shares == sorted(shares, reverse=True) and shares[0] > 0, figures
    targets.get_by_role("link", name="Name").click()
    by_name = page.get_by_role("table", name=re.compile("^Employers and MPs, by name"))
    names = by_name.locator("tbody th").all_inner_texts()
    assert names == sorted(names) and first["target_name"] in names
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SCREENSHOTS / "staff-targets.png"), full_page=True)
