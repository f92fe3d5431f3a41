"""The member pages over real HTTP: one letter per link, the three choices, and the guards."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import requests
import uvicorn
from smtp_server import SmtpServer, free_port
from sqlalchemy import select
from test_waves import EMPLOYER_WAVE, MP_WAVE, SETTINGS, sample  # noqa: F401

from engine.launch import launch_wave
from engine.links import csrf_token, link_token
from engine.models import letter_table, member_table, outbox_table, utcnow
from engine.send import send_outbox
from engine.smtp import SmtpTransport
from engine.waves import create_wave
from engine.web.app import GuessThrottle, create_app


class Site:
    def __init__(self, engine, throttle=None):
        self.engine = engine
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            create_app(engine, SETTINGS, throttle=throttle), host="127.0.0.1", port=port, log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)

    def letter(self, membership_no: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(letter_table)
                .join(member_table, member_table.c.id == letter_table.c.member_id)
                .where(member_table.c.membership_no == membership_no)
            ).one()
        return dict(row._mapping)

    def link(self, membership_no: str) -> str:
        return f"{self.base}/l/{link_token(SETTINGS.secret, self.letter(membership_no)['reference'])}"

    def form(self, membership_no: str, **fields) -> dict:
        return {"csrf": csrf_token(SETTINGS.secret, self.letter(membership_no)["reference"]), **fields}


@pytest.fixture
def site(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    with Site(sample) as running:
        yield running


def letters_out(engine, kind: str = "letter") -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(outbox_table.c.id).where(outbox_table.c.kind == kind)).all())


def test_a_link_shows_that_members_letter_and_nothing_else(site):
    page = requests.get(site.link("M100001"), timeout=10)
    assert page.status_code == 200
    assert "<h1>Your letter to Harriet Alden MP</h1>" in page.text
    assert "Dear Ms Alden," in page.text
    assert "Aisha Khan" in page.text
    assert "Ben Ashworth" not in page.text  # another member writing to the same MP
    assert 'name="csrf"' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "% the same as" in page.text  # the similarity hint


def test_a_wrong_link_gets_a_plain_page(site):
    page = requests.get(f"{site.base}/l/not-a-real-token", timeout=10)
    assert page.status_code == 404
    assert "This link does not work" in page.text
    assert "Alden" not in page.text


def test_send_for_me_queues_the_letter_once_even_when_replayed(site):
    url = site.link("M100001")
    form = site.form(
        "M100001",
        action="send",
        text="Dear Ms Alden,\n\nMy own words.\n\nAisha Khan\n",
        address="1 Orchard Way\nSevenoaks\nBR8 7RE",
    )
    first = requests.post(url, data=form, allow_redirects=False, timeout=10)
    assert first.status_code == 303
    assert first.headers["Location"].endswith("?done=send")
    replay = requests.post(url, data=form, allow_redirects=False, timeout=10)
    assert replay.headers["Location"].endswith("?done=already")
    assert letters_out(site.engine) == 1
    letter = site.letter("M100001")
    assert letter["state"] == "queued"
    assert letter["final_text"] == "Dear Ms Alden,\n\nMy own words.\n\nAisha Khan\n"
    assert letter["body_text"].startswith(
        "Dear Ms Alden,\n\nI am one of your constituents"
    )  # the merge stays
    assert letter["target_email"] == "harriet.alden.mp@parliament.example"
    after = requests.get(url, timeout=10)
    assert "Your letter is on its way to Harriet Alden MP" in after.text
    assert 'name="action"' not in after.text


def test_forms_need_the_letters_own_csrf_token(site):
    url = site.link("M100001")
    missing = requests.post(url, data={"action": "optout"}, timeout=10)
    assert missing.status_code == 400
    borrowed = requests.post(url, data=site.form("M100002", action="optout"), timeout=10)
    assert borrowed.status_code == 400
    assert site.letter("M100001")["state"] == "drafted"


def test_an_mp_letter_needs_a_home_address(site):
    page = requests.post(
        site.link("M100001"),
        data=site.form("M100001", action="send", text="Dear Ms Alden", address=""),
        timeout=10,
    )
    assert page.status_code == 400
    assert "Your home address is needed: MPs reply to their own constituents." in page.text
    assert site.letter("M100001")["state"] == "drafted"


def test_self_send_and_opt_out_are_recorded(site):
    assert (
        requests.post(
            site.link("M100002"), data=site.form("M100002", action="self", text="My letter"), timeout=10
        ).status_code
        == 200
    )
    assert site.letter("M100002")["state"] == "self_sent"
    assert requests.post(site.link("M100003"), data=site.form("M100003", action="optout"), timeout=10).ok
    assert site.letter("M100003")["state"] == "opted_out"
    assert letters_out(site.engine) == 0


def test_an_expired_link_works_only_for_looking_after_acting(site):
    with site.engine.begin() as conn:
        conn.execute(letter_table.update().values(token_expires_at=utcnow() - timedelta(days=1)))
    assert requests.get(site.link("M100001"), timeout=10).status_code == 404
    with site.engine.begin() as conn:
        conn.execute(
            letter_table.update()
            .where(letter_table.c.reference == site.letter("M100002")["reference"])
            .values(state="sent")
        )
    assert requests.get(site.link("M100002"), timeout=10).status_code == 200


def test_the_letter_downloads_as_a_pdf(site):
    response = requests.get(site.link("M100001") + "/letter.pdf", timeout=30)
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")


def test_one_click_unsubscribe(site):
    reference = site.letter("M100001")["reference"]
    token = link_token(SETTINGS.secret, reference, "unsubscribe")
    response = requests.post(
        f"{site.base}/unsubscribe/{reference}/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=10
    )
    assert response.status_code == 200
    with site.engine.connect() as conn:
        opted = conn.execute(
            select(member_table.c.mail_opt_out_at).where(member_table.c.membership_no == "M100001")
        )
        assert opted.scalar() is not None
    forged = requests.post(f"{site.base}/unsubscribe/{reference}/wrong", timeout=10)
    assert forged.status_code == 404


def test_repeated_wrong_links_are_slowed_down():
    throttle = GuessThrottle(free=3, max_delay=5)
    delays = [throttle.miss("203.0.113.9") for _ in range(7)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:] == [0.25, 0.5, 1.0, 2.0]
    assert throttle.miss("198.51.100.1") == 0


def test_the_letter_reaches_its_target_from_the_campaign_with_a_copy_and_a_receipt(site):
    requests.post(
        site.link("M100001"),
        data=site.form(
            "M100001",
            action="send",
            text="Dear Ms Alden,\n\nPlease act.\n",
            address="1 Orchard Way\nSevenoaks\nBR8 7RE",
        ),
        timeout=10,
    )
    with SmtpServer() as smtp:
        send_outbox(site.engine, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=lambda s: None)
        letters = [r for r in smtp.recorder.received if ".letter@" in r.message["Message-ID"]]
        receipts = [r for r in smtp.recorder.received if ".receipt@" in r.message["Message-ID"]]
    assert len(letters) == 1 and len(receipts) == 1
    message = letters[0].message
    assert message["From"] == "Aisha Khan via the union <campaigns@union.example>"
    assert message["To"] == "Harriet Alden MP <harriet.alden.mp@parliament.example>"
    assert message["Cc"] == "Aisha Khan <aisha.khan@members.example.org>"
    assert message["Reply-To"] == "Aisha Khan <aisha.khan@members.example.org>"
    assert message["List-Unsubscribe"] is None
    reference = site.letter("M100001")["reference"]
    assert message["Subject"] == f"School inspections and staff well-being in Sevenoaks [Ref: {reference}]"
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Dear Ms Alden,\n\nPlease act.\n")
    assert "Sent by Aisha Khan, 1 Orchard Way, Sevenoaks, BR8 7RE" in text
    assert sorted(letters[0].rcpt_tos) == [
        "aisha.khan@members.example.org",
        "harriet.alden.mp@parliament.example",
    ]
    assert receipts[0].message["To"] == "Aisha Khan <aisha.khan@members.example.org>"
    assert site.letter("M100001")["state"] == "sent"


def test_employer_with_postal_address_only_offers_self_send(sample):  # noqa: F811
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    with Site(sample) as running:
        with sample.connect() as conn:
            reference = (
                conn.execute(select(letter_table.c.reference).where(letter_table.c.target_email.is_(None)))
                .scalars()
                .first()
            )
        page = requests.get(f"{running.base}/l/{link_token(SETTINGS.secret, reference)}", timeout=10)
    assert "Bristol City Council" in page.text
    assert 'value="send"' not in page.text
    assert 'value="self"' in page.text


def test_the_page_prompts_for_own_words_and_an_unfilled_prompt_is_not_sent(site):
    page = requests.get(site.link("M100001"), timeout=10)
    assert "replace the text in [square brackets]" in page.text
    draft = site.letter("M100001")["body_text"]
    assert "[Why this matters in your school" in draft
    requests.post(
        site.link("M100001"),
        data=site.form("M100001", action="send", text=draft, address="1 Orchard Way\nSevenoaks\nBR8 7RE"),
        timeout=10,
    )
    with SmtpServer() as smtp:
        send_outbox(site.engine, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=lambda s: None)
        [letter] = [r.message for r in smtp.recorder.received if ".letter@" in r.message["Message-ID"]]
    text = letter.get_body(("plain",)).get_content()
    assert "Why this matters" not in text
    assert "I am one of your constituents" in text
