"""The member pages over real HTTP: one letter per link, the three choices, and the guards."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from urllib.parse import unquote

import pytest
import requests
import uvicorn
from click.testing import CliRunner
from smtp_server import SmtpServer, free_port
from sqlalchemy import select
from test_waves import EMPLOYER_WAVE, MP_WAVE, SETTINGS, sample  # noqa: F401

from engine.cli import main
from engine.followup.drafts import draft_letter, load_wave
from engine.letters.launch import launch_wave
from engine.letters.links import csrf_token, link_token
from engine.letters.waves import create_wave
from engine.mail.outbox import parse_message, queued_messages
from engine.mail.send import send_outbox
from engine.mail.smtp import SmtpTransport
from engine.store.models import event_table, letter_table, member_table, outbox_table, utcnow
from engine.web.app import create_app, server_config
from engine.web.throttle import GuessThrottle, client_address


class Site:
    """The member pages on a real uvicorn server, configured as `campaign serve` runs them."""

    def __init__(self, engine, throttle=None, settings=SETTINGS):
        self.engine = engine
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = server_config(
            create_app(engine, settings, throttle=throttle), "127.0.0.1", port, log_level="error"
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
        return f"{self.base}/l/{link_token(SETTINGS.secret, self.letter(membership_no)['link_nonce'])}"

    def form(self, membership_no: str, **fields) -> dict:
        """A form as the member's page posts it: its token, and the letter it acts on."""
        letter = self.letter(membership_no)
        return {
            "csrf": csrf_token(SETTINGS.secret, letter["link_nonce"]),
            "letter": letter["reference"],
            **fields,
        }


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
    assert first.headers["Location"] == url.removeprefix(site.base)
    replay = requests.post(url, data=form, allow_redirects=False, timeout=10)
    assert replay.headers["Location"] == url.removeprefix(site.base)
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


def test_a_nul_or_control_character_pasted_into_the_letter_is_dropped_not_a_server_error(site):
    url = site.link("M100001")
    form = site.form(
        "M100001",
        action="send",
        text="Dear Ms Alden,\n\nMy own\x00 words,\x1b pasted.\n\nAisha Khan\n",
        address="1 Orchard\x00 Way\nSevenoaks\nBR8 7RE",
    )
    sent = requests.post(url, data=form, allow_redirects=False, timeout=10)
    assert sent.status_code == 303
    letter = site.letter("M100001")
    assert letter["state"] == "queued"
    assert letter["final_text"] == "Dear Ms Alden,\n\nMy own words, pasted.\n\nAisha Khan\n"
    assert letter["sender_address"] == "1 Orchard Way\nSevenoaks\nBR8 7RE"


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
    expired = requests.get(site.link("M100001"), timeout=10)
    assert expired.status_code == 410
    assert "Dear Ms Alden" not in expired.text and "Aisha" not in expired.text
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
    letter = site.letter("M100001")
    reference = letter["reference"]
    token = link_token(SETTINGS.secret, letter["link_nonce"], "unsubscribe")
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


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_presenting_wrong_links_is_shut_out_longer_each_time_then_forgiven():
    clock = FakeClock()
    throttle = GuessThrottle(free=3, window=600, max_block=60, clock=clock)
    waits = []
    for _ in range(10):
        waits.append(throttle.retry_after("203.0.113.9"))
        throttle.miss("203.0.113.9")
        waits.append(throttle.retry_after("203.0.113.9"))
        clock.now += waits[-1]  # the client comes back exactly when told
    assert waits[:4] == [0] * 4  # two wrong links cost nothing; the third shuts it out for a second
    assert waits[4::2] == [0] * 8  # never turned away when it waited as told
    assert waits[5::2] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert throttle.retry_after("198.51.100.1") == 0  # another client is not affected
    clock.now += 601  # ten minutes without a miss: free again
    throttle.miss("203.0.113.9")
    assert throttle.retry_after("203.0.113.9") == 0


def test_the_throttle_remembers_a_bounded_number_of_clients():
    clock = FakeClock()
    throttle = GuessThrottle(free=1, max_clients=100, clock=clock)
    for n in range(1000):
        throttle.miss(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert throttle.retry_after("10.0.3.231") == 1  # the last one seen is still shut out
    assert throttle.retry_after("10.0.0.0") == 0  # the first one is forgotten


def test_behind_trusted_proxies_the_client_is_the_right_most_address_they_did_not_add():
    proxies = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    # The client wrote the left-most entry itself; our two proxies added the rest.
    assert client_address("127.0.0.1", ["6.6.6.6, 203.0.113.9", "10.1.2.3"], proxies) == "203.0.113.9"
    assert client_address("127.0.0.1", ["203.0.113.9:51000"], proxies) == "203.0.113.9"
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    # A peer that is not a trusted proxy is the client, whatever it claims.
    assert client_address("198.51.100.7", ["203.0.113.9"], proxies) == "198.51.100.7"
    assert client_address("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"
    # One IPv6 host holds a whole /64: it is one client however many addresses it uses.
    assert (
        client_address("2001:db8:1:2::7", [], ())
        == client_address("2001:db8:1:2::8", [], ())
        == ("2001:db8:1:2::/64")
    )


def wrong_link(site, client: str | None = None, n: int = 0) -> requests.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    return requests.get(f"{site.base}/l/not-a-real-token-{n}", headers=headers, timeout=30)


def test_a_flood_of_wrong_links_gets_429_at_once_and_members_are_served_meanwhile(sample):  # noqa: F811
    """80 wrong links at once from one client, through our proxy, while a member opens theirs."""
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    behind_proxy = replace(SETTINGS, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    with Site(sample, settings=behind_proxy) as site:
        member = {"X-Forwarded-For": "198.51.100.7"}
        started = time.monotonic()
        assert requests.get(site.link("M100001"), headers=member, timeout=30).status_code == 200
        unloaded = time.monotonic() - started
        with ThreadPoolExecutor(max_workers=80) as pool:
            flood = [pool.submit(wrong_link, site, "203.0.113.9", n) for n in range(80)]
            time.sleep(0.2)  # the flood is in flight
            started = time.monotonic()
            page = requests.get(site.link("M100001"), headers=member, timeout=30)
            loaded = time.monotonic() - started
            answers = [f.result() for f in flood]
    assert page.status_code == 200 and "Your letter to Harriet Alden MP" in page.text
    assert {a.status_code for a in answers} <= {404, 429}
    refused = [a for a in answers if a.status_code == 429]
    # Only the five free wrong links, and those the server's 40 worker threads had already
    # started to look up when the fifth was counted, can have got as far as a 404.
    assert len(answers) - len(refused) <= 5 + 40
    assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    assert "Too many links that do not work" in refused[0].text
    assert refused[0].headers["Cache-Control"] == "no-store"
    # Nobody's request was held: on a quiet or a busy machine, the member waited about as
    # long as with no flood at all (a throttle that sleeps kept them waiting 5-8 seconds).
    assert loaded < max(2.0, 10 * unloaded)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    throttle = GuessThrottle(free=5)
    with Site(sample, throttle=throttle) as direct:
        # No proxy is trusted: a client claiming a new address each time is still one client.
        answers = [wrong_link(direct, f"203.0.113.{n}", n).status_code for n in range(7)]
    assert answers == [404] * 5 + [429] * 2
    behind_proxy = replace(SETTINGS, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    with Site(sample, settings=behind_proxy) as proxied:
        # Through our proxy: the forwarded client is shut out, however it fakes the left of the header...
        answers = [wrong_link(proxied, f"192.0.2.{n}, 203.0.113.9", n).status_code for n in range(7)]
        assert answers == [404] * 5 + [429] * 2
        # ...and another member behind the same proxy is not.
        mine = requests.get(proxied.link("M100001"), headers={"X-Forwarded-For": "198.51.100.7"}, timeout=10)
        assert mine.status_code == 200
        assert wrong_link(proxied, "198.51.100.7").status_code == 404


def test_the_letter_reaches_its_target_from_the_campaign_and_the_member_gets_a_receipt(site):
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
        letters = [r for r in smtp.recorder.received if ".letter." in r.message["Message-ID"]]
        receipts = [r for r in smtp.recorder.received if ".receipt." in r.message["Message-ID"]]
    assert len(letters) == 1 and len(receipts) == 1
    message = letters[0].message
    assert message["From"] == "Aisha Khan via Example Schools Union <campaigns@union.example>"
    assert message["To"] == "Harriet Alden MP <harriet.alden.mp@parliament.example>"
    assert message["Cc"] is None  # the member's copy is their receipt
    assert message["Reply-To"] == "Aisha Khan <aisha.khan@members.example.org>"
    assert message["List-Unsubscribe"] is None
    reference = site.letter("M100001")["reference"]
    assert (
        message["Subject"] == f"Ofsted's revised framework and school staff in Sevenoaks [Ref: {reference}]"
    )
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Dear Ms Alden,\n\nPlease act.\n")
    assert "Sent by Aisha Khan, 1 Orchard Way, Sevenoaks, BR8 7RE" in text
    assert letters[0].rcpt_tos == ["harriet.alden.mp@parliament.example"]
    assert receipts[0].message["To"] == "Aisha Khan <aisha.khan@members.example.org>"
    assert site.letter("M100001")["state"] == "sent"


def test_employer_with_postal_address_only_offers_self_send(sample):  # noqa: F811
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    with Site(sample) as running:
        with sample.connect() as conn:
            nonce = (
                conn.execute(select(letter_table.c.link_nonce).where(letter_table.c.target_email.is_(None)))
                .scalars()
                .first()
            )
        page = requests.get(f"{running.base}/l/{link_token(SETTINGS.secret, nonce)}", timeout=10)
    assert "Bristol City Council" in page.text
    assert 'value="send"' not in page.text
    assert 'value="self"' in page.text


def test_the_page_prompts_for_own_words_and_an_unfilled_prompt_is_not_sent(site):
    page = requests.get(site.link("M100001"), timeout=10)
    assert "in [square brackets] with yours" in page.text
    draft = site.letter("M100001")["body_text"]
    assert "[Why this matters in your school" in draft
    requests.post(
        site.link("M100001"),
        data=site.form(
            "M100001", action="send-anyway", text=draft, address="1 Orchard Way\nSevenoaks\nBR8 7RE"
        ),
        timeout=10,
    )
    with SmtpServer() as smtp:
        send_outbox(site.engine, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=lambda s: None)
        [letter] = [r.message for r in smtp.recorder.received if ".letter." in r.message["Message-ID"]]
    text = letter.get_body(("plain",)).get_content()
    assert "Why this matters" not in text
    assert "I am one of your constituents" in text


def test_knowing_the_secret_and_a_reference_gives_none_of_a_members_links(site):
    """References are printed on every letter; links were once HMACs of them."""
    letter = site.letter("M100001")
    reference = letter["reference"]

    def from_reference(purpose: str) -> str:
        digest = hmac.digest(SETTINGS.secret.encode(), f"{purpose}:{reference}".encode(), "sha256")
        return base64.urlsafe_b64encode(digest).decode()[:22]

    assert requests.get(f"{site.base}/l/{from_reference('letter')}", timeout=10).status_code == 404
    unsubscribe = f"{site.base}/unsubscribe/{reference}/{from_reference('unsubscribe')}"
    assert requests.post(unsubscribe, timeout=10).status_code == 404
    answer = f"{site.base}/answer/{reference}/{from_reference('answer')}/yes"
    assert requests.get(answer, timeout=10).status_code == 404
    forged = requests.post(
        site.link("M100001"), data={"action": "optout", "csrf": from_reference("form")}, timeout=10
    )
    assert forged.status_code == 400
    assert site.letter("M100001")["state"] == "drafted"
    # The member's own link, made from the letter's random nonce, works; no two letters share one.
    assert requests.get(site.link("M100001"), timeout=10).status_code == 200
    with site.engine.connect() as conn:
        nonces = conn.execute(select(letter_table.c.link_nonce)).scalars().all()
    assert len(set(nonces)) == len(nonces) == 40


ADDRESS = "1 Orchard Way\nSevenoaks\nBR8 7RE"
PROMPT = "[Why this matters in your school: a sentence or two in your own words."


def sent_letter_text(engine) -> str:
    """The plain text of the one letter the outbox sends to its target, through real SMTP."""
    with SmtpServer() as smtp:
        send_outbox(engine, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=lambda s: None)
        [letter] = [r.message for r in smtp.recorder.received if ".letter." in r.message["Message-ID"]]
    return letter.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_text_typed_inside_a_prompt_is_sent(site):
    """Issue 12, item 1: a member who types inside the brackets keeps their words."""
    draft = site.letter("M100001")["body_text"]
    prompt_line = next(line for line in draft.split("\n") if line.startswith(PROMPT))
    mine = "[Our inspection in May meant three weekends of work]"
    form = site.form("M100001", action="send", text=draft.replace(prompt_line, mine), address=ADDRESS)
    assert requests.post(site.link("M100001"), data=form, timeout=10).ok
    assert site.letter("M100001")["state"] == "queued"
    assert "Our inspection in May meant three weekends of work" in sent_letter_text(site.engine)


def test_sending_with_an_unfilled_prompt_asks_first_and_then_leaves_it_out(site):
    """Issue 12, item 1: without JavaScript, the page lists the unfilled prompts before anything goes."""
    draft = site.letter("M100001")["body_text"]
    edited = draft.replace("I am writing to ask", "As a teacher of twenty years, I am writing to ask")
    form = site.form("M100001", action="send", text=edited, address=ADDRESS)
    asked = requests.post(site.link("M100001"), data=form, timeout=10)
    assert asked.status_code == 200
    assert "You have not filled in 1 prompt:" in asked.text
    assert "<li>" + PROMPT in asked.text
    assert 'value="send-anyway"' in asked.text
    assert letters_out(site.engine) == 0 and site.letter("M100001")["state"] == "drafted"
    # The member's words are kept while they decide.
    assert site.letter("M100001")["final_text"] == edited
    form["action"] = "send-anyway"
    assert requests.post(site.link("M100001"), data=form, timeout=10).ok
    text = sent_letter_text(site.engine)
    assert "As a teacher of twenty years" in text
    assert "Why this matters" not in text


def test_open_in_my_email_saves_my_text_and_leaves_out_untouched_prompts(site):
    """Issue 12, item 2: the mailto link carries exactly the text the member saved."""
    draft = site.letter("M100001")["body_text"]
    edited = draft.replace("I am writing to ask", "Since our May inspection, I am writing to ask")
    form = site.form("M100001", action="mailto", text=edited, address=ADDRESS)
    opened = requests.post(site.link("M100001"), data=form, allow_redirects=False, timeout=10)
    assert opened.status_code == 303
    location = opened.headers["Location"]
    assert location.startswith(
        "mailto:harriet.alden.mp%40parliament.example?subject=Ofsted%27s%20revised%20framework"
    )
    body = unquote(location.split("&body=", 1)[1])
    assert "Since our May inspection, I am writing to ask" in body
    assert "Why this matters" not in body
    assert body.rstrip().endswith("BR8 7RE")  # the whole letter, not cut
    # Saved: the page shows it when the member comes back, and the PDF has it.
    again = requests.get(site.link("M100001"), timeout=10)
    assert "Since our May inspection" in again.text and "Your changes are saved." in again.text
    assert site.letter("M100001")["state"] == "drafted"


def test_a_letter_too_long_for_an_email_link_is_never_cut_silently(site):
    draft = site.letter("M100001")["body_text"]
    long = draft.replace("I am writing to ask", "Our school has struggled. " * 200 + "I am writing to ask")
    form = site.form("M100001", action="mailto", text=long, address=ADDRESS)
    page = requests.post(site.link("M100001"), data=form, allow_redirects=False, timeout=10)
    assert page.status_code == 200
    assert "too long to hand to an email program in one piece" in page.text
    assert (
        'href="mailto:harriet.alden.mp%40parliament.example?subject=Ofsted%27s%20revised%20framework'
        in page.text
    )
    assert "&amp;body=" not in page.text
    assert site.letter("M100001")["final_text"] == long


def test_the_address_in_the_page_link_cannot_say_thank_you(site):
    """Issue 12, item 10: the page shows the letter's real state, whatever the URL says."""
    for done in ("send", "self", "optout", "already"):
        page = requests.get(site.link("M100001") + f"?done={done}", timeout=10)
        for claim in (
            "queued to be sent",
            "on its way",
            "Thank you for sending",
            "will not be sent",
            "already",
        ):
            assert claim not in page.text, (done, claim)
        assert "Your letter is ready for you to check" in page.text
    assert site.letter("M100001")["state"] == "drafted"


def test_an_unknown_address_gets_the_sites_page_not_json(site):
    """Issue 12, item 18: any address we do not serve is the HTML 'does not work' page."""
    for path in ("/nothing", "/l/", "/l/not-a-real-token/extra/path", "/l/x/letter.pdf/more"):
        page = requests.get(site.base + path, timeout=10)
        assert page.status_code == 404, path
        assert page.headers["Content-Type"].startswith("text/html"), path
        assert "<h1>This link does not work</h1>" in page.text, path
    health = requests.get(site.base + "/health", timeout=10)
    assert health.json() == {"status": "ok"}


def test_an_expired_link_explains_and_emails_a_new_one_only_to_the_address_on_file(site):
    """Issue 12, item 9: no dead end, and the page cannot be used to send mail anywhere else."""
    url = site.link("M100001")
    with site.engine.begin() as conn:  # the wave was launched 31 days ago
        conn.execute(outbox_table.update().values(created_at=utcnow() - timedelta(days=31)))
        conn.execute(letter_table.update().values(token_expires_at=utcnow() - timedelta(days=1)))
    page = requests.get(url, timeout=10)
    assert page.status_code == 410
    assert "<h1>Your link ran out</h1>" in page.text and "Send me a new link" in page.text
    before = letters_out(site.engine, "invitation")
    asked = requests.post(
        url + "/new-link",
        data={"csrf": site.form("M100001")["csrf"], "email": "someone-else@example.org"},
        timeout=10,
    )
    assert asked.status_code == 200
    assert "If we have an email address for you, a new link is on its way to it" in asked.text
    with site.engine.connect() as conn:
        latest = conn.execute(
            select(outbox_table).where(outbox_table.c.kind == "invitation").order_by(outbox_table.c.id.desc())
        ).first()
    assert letters_out(site.engine, "invitation") == before + 1
    assert latest.to_addr == "Aisha Khan <aisha.khan@members.example.org>"
    assert latest.letter_id == site.letter("M100001")["id"]
    # The same link works again.
    assert requests.get(url, timeout=10).status_code == 200
    # Asking again at once sends nothing more, and the page says the same.
    with site.engine.begin() as conn:
        conn.execute(letter_table.update().values(token_expires_at=utcnow() - timedelta(days=1)))
    again = requests.post(url + "/new-link", data={"csrf": site.form("M100001")["csrf"]}, timeout=10)
    assert again.text == asked.text
    assert letters_out(site.engine, "invitation") == before + 1
    # Without the page's own form token, nothing is sent.
    forged = requests.post(url + "/new-link", data={}, timeout=10)
    assert forged.status_code == 400


def test_organisers_can_renew_a_members_link(site):
    """Issue 12, item 9: `campaign letters link WAVE MEMBER --renew`."""
    url = site.link("M100001")
    with site.engine.begin() as conn:
        conn.execute(letter_table.update().values(token_expires_at=utcnow() - timedelta(days=1)))
    assert requests.get(url, timeout=10).status_code == 410
    result = CliRunner().invoke(
        main,
        [
            "--db",
            site.engine.url.render_as_string(hide_password=False),
            "letters",
            "link",
            "MPs",
            "M100001",
            "--renew",
        ],
        env={"CAMPAIGN_SECRET": SETTINGS.secret, "CAMPAIGN_BASE_URL": SETTINGS.base_url},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(url.removeprefix(site.base))
    assert "Renewed: the link works until" in result.stderr
    assert requests.get(url, timeout=10).status_code == 200
    with site.engine.connect() as conn:
        actions = conn.execute(select(event_table.c.action)).scalars().all()
    assert "letters.link_renewed" in actions


def test_the_follow_up_is_reached_through_the_members_first_link_with_where_things_stand(sample):  # noqa: F811
    """Issue 12, items 3 and 8: one link per wave shows every letter, where each stands, and the next step."""
    create_wave(sample, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(sample, "Employers", SETTINGS)
    lt = letter_table.c
    with sample.begin() as conn:
        first, other = (
            dict(r._mapping)
            for r in conn.execute(
                select(letter_table).where(lt.target_email.is_not(None)).order_by(lt.id).limit(2)
            )
        )
        conn.execute(
            letter_table.update()
            .where(lt.id == first["id"])
            .values(
                state="replied", sent_at=utcnow() - timedelta(days=9), replied_at=utcnow() - timedelta(days=2)
            )
        )
        first = dict(conn.execute(select(letter_table).where(lt.id == first["id"])).one()._mapping)
        wave = load_wave(conn, first["wave_id"], SETTINGS)
        follow_up = draft_letter(conn, wave, first, "follow_up", SETTINGS, utcnow())
    link = f"/l/{link_token(SETTINGS.secret, first['link_nonce'])}"
    # The follow-up's invitation carries the member's first link.
    [invitation] = [m for m in queued_messages(sample, SETTINGS) if m.kind == "follow_up_invitation"]
    assert link in parse_message(invitation.data).get_body(("plain",)).get_content()
    target = first["target_name"]
    with Site(sample) as site:
        page = requests.get(site.base + link, timeout=10)
        assert f"<h1>Your letters to {target}</h1>" in page.text
        sent_on = (utcnow() - timedelta(days=9)).strftime("%B %Y")
        assert f"Your first letter was sent to {target} on " in page.text and sent_on in page.text
        assert f"{target} replied on " in page.text
        assert "Your follow-up is ready for you to check, below." in page.text
        assert f'name="letter" value="{follow_up["reference"]}"' in page.text
        csrf = csrf_token(SETTINGS.secret, first["link_nonce"])
        # A form naming another member's letter is refused; one naming the decided letter changes nothing.
        stranger = {"csrf": csrf, "letter": other["reference"], "action": "optout"}
        assert requests.post(site.base + link, data=stranger, timeout=10).status_code == 400
        decided = {"csrf": csrf, "letter": first["reference"], "action": "optout"}
        assert requests.post(site.base + link, data=decided, timeout=10).ok
        mine = {
            "csrf": csrf,
            "letter": follow_up["reference"],
            "action": "send",
            "text": follow_up["body_text"],
        }
        assert requests.post(site.base + link, data=mine, timeout=10).ok
        after = requests.get(site.base + link, timeout=10)
    with sample.connect() as conn:
        states = dict(conn.execute(select(lt.reference, lt.state)).all())
    assert states[first["reference"]] == "replied"
    assert states[other["reference"]] == "drafted"
    assert states[follow_up["reference"]] == "queued"
    assert f"Your follow-up is on its way to {target}" in after.text
