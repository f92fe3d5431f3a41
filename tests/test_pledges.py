"""Pledge waves, the inspector step-down count, and share links on the member's page (issue 13, 5–7)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import DATA
from smtp_server import SmtpServer
from sqlalchemy import select
from test_waves import MP_WAVE, SETTINGS, sample  # noqa: F401
from test_web import Site

from engine.errors import CampaignError
from engine.letters.launch import launch_wave
from engine.letters.pledges import pledge_counts
from engine.letters.waves import WaveSpec, create_wave, edit_wave, wave_status
from engine.lookup.resolve import resolve_members
from engine.mail.send import send_outbox
from engine.mail.smtp import SmtpTransport
from engine.members.importer import import_members
from engine.store.models import letter_table, member_table, utcnow, wave_table

QUESTION = "I will remove our inspection grade from our signage and letterheads"
PLEDGE = WaveSpec(target="pledge", invite="pledge-invitation", question=QUESTION)
SHARE_URL = "https://union.example/campaigns/pause-ofsted?from=members&x=1"
SHARE_TEXT = "Fair & safe inspection: pause it now! 100% #PauseOfsted"
SHARING = replace(SETTINGS, share_url=SHARE_URL, share_text=SHARE_TEXT)


def wave_members(engine, wave: str) -> list[dict]:
    """Each member with a row in the wave: membership number, region, employer, state."""
    m, lt, w = member_table.c, letter_table.c, wave_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(m.membership_no, m.region, m.employer_name, lt.state)
            .join(letter_table, lt.member_id == m.id)
            .join(wave_table, w.id == lt.wave_id)
            .where(w.name == wave)
            .order_by(m.membership_no)
        ).all()
    return [dict(r._mapping) for r in rows]


# ---- pledge waves ---------------------------------------------------------------


def test_a_pledge_wave_needs_its_question_and_takes_no_letter(sample):  # noqa: F811
    with pytest.raises(CampaignError, match=r"^--question: a pledge wave needs its question"):
        create_wave(sample, "P", WaveSpec(target="pledge", invite="pledge-invitation"), SETTINGS)
    with pytest.raises(CampaignError, match=r"^--letter: a pledge wave has no letter"):
        create_wave(sample, "P", replace(PLEDGE, letter="mp-inspection"), SETTINGS)
    with pytest.raises(CampaignError, match=r"^--attach: a pledge wave has no letter to attach files to$"):
        create_wave(sample, "P", replace(PLEDGE, attach=["framework.pdf"]), SETTINGS)
    with pytest.raises(CampaignError, match=r"^--question: only a pledge wave"):
        create_wave(sample, "P", replace(MP_WAVE, question=QUESTION), SETTINGS)
    with pytest.raises(CampaignError, match=r"^--question: plain words only"):
        create_wave(sample, "P", replace(PLEDGE, question="I will {{ member.name }}"), SETTINGS)
    wave = create_wave(sample, "P", PLEDGE, SETTINGS)
    # No letter, so the invitation's `{# nations: england #}` line sets the nations.
    assert (wave["letter_template"], wave["question"], wave["nations"]) == ("", QUESTION, ["england"])
    with pytest.raises(CampaignError, match=r"^--letter: required for a wave to mp$"):
        edit_wave(sample, "P", WaveSpec(target="mp", question=""), SETTINGS)
    edited = edit_wave(sample, "P", WaveSpec(target="mp", question="", letter="mp-inspection"), SETTINGS)
    assert (edited["target"], edited["question"], edited["letter_template"]) == ("mp", None, "mp-inspection")


def test_pledges_are_counted_per_wave_region_and_employer(sample, cli):  # noqa: F811
    create_wave(sample, "Signage", PLEDGE, SETTINGS)
    result = launch_wave(sample, "Signage", SETTINGS)
    assert result.created > 10 and result.skipped.get("outside_nations")  # England only
    with sample.begin() as conn:  # a member whose import had no region
        conn.execute(member_table.update().where(member_table.c.membership_no == "M100010").values(region=""))
    members = wave_members(sample, "Signage")
    by_no = {m["membership_no"]: m for m in members}
    no_employer = next(m["membership_no"] for m in members if m["employer_name"] is None)
    pledgers = ["M100001", "M100002", "M100010", no_employer]
    for number in pledgers:
        assert cli("letters", "decide", "Signage", number, "pledge").exit_code == 0
    assert cli("letters", "decide", "Signage", "M100003", "decline").exit_code == 0
    # A change of mind: M100002 declines after all; giving the same answer again changes nothing.
    changed = cli("letters", "decide", "Signage", "M100002", "decline")
    assert changed.output.startswith("M100002: declined (reference ")
    again = cli("letters", "decide", "Signage", "M100002", "decline")
    assert again.output == "M100002: already declined; nothing changed.\n"
    wrong = cli("letters", "decide", "Signage", "M100004", "send")
    assert wrong.exit_code == 2
    assert "is a pledge wave: the member's choice is pledge or decline" in wrong.output

    answers = {n: "pledged" for n in pledgers} | {"M100002": "declined", "M100003": "declined"}
    total = {"pledged": 3, "declined": 2, "no_answer": len(members) - 5}
    status = wave_status(sample, "Signage")
    assert status["pledges"] == total
    assert (status["question"], status["states"]["pledged"]) == (QUESTION, 3)

    for by, column, blank in (
        ("region", "region", "no region"),
        ("employer", "employer_name", "no employer"),
    ):
        expected: dict[str, Counter] = {}
        for m in members:
            group = (m[column] or "").strip() or blank
            expected.setdefault(group, Counter())[answers.get(m["membership_no"], "no_answer")] += 1
        counts = pledge_counts(sample, "Signage", by)
        assert {k: counts[k] for k in ("pledged", "declined", "no_answer")} == total
        got = {
            g[by]: Counter({k: g[k] for k in ("pledged", "declined", "no_answer") if g[k]})
            for g in counts["groups"]
        }
        assert got == expected
        assert counts["groups"][0]["pledged"] == max(g["pledged"] for g in counts["groups"])
    assert by_no["M100010"]["region"] == "" and "no region" in {
        g["region"] for g in pledge_counts(sample, "Signage", "region")["groups"]
    }

    shown = cli("pledges", "Signage", "--by", "region")
    assert shown.exit_code == 0
    assert "pledged: 3, declined: 2, no answer: " in shown.output
    assert "no region" in shown.output
    as_json = json.loads(cli("pledges", "Signage", "--by", "employer", "--json").output)
    assert as_json == {**pledge_counts(sample, "Signage", "employer"), "question": QUESTION}
    assert as_json["by"] == "employer" and {"employer", "pledged", "declined", "no_answer"} == set(
        as_json["groups"][0]
    )
    not_pledge = cli("pledges", "Nope")
    assert (not_pledge.exit_code, not_pledge.output) == (
        2,
        "Error: no wave named 'Nope' (see `campaign wave list`)\n",
    )


# ---- the inspector step-down letter ---------------------------------------------


def inspectors_csv(tmp_path, numbers: list[str]):
    """Some sample members again, with the Inspector column the union's export carries."""
    with open(DATA / "members.csv", encoding="utf-8-sig", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["Membership No"] in numbers]
    path = tmp_path / "inspectors.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        fields = list(rows[0].keys())
        writer = csv.DictWriter(f, fields if "Inspector" in fields else [*fields, "Inspector"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "Inspector": "yes"})
    return path


def test_the_organiser_sees_how_many_inspectors_have_stepped_down(sample, tmp_path, cli):  # noqa: F811
    inspectors = ["M100001", "M100002", "M100003"]
    import_members(sample, inspectors_csv(tmp_path, inspectors))
    resolve_members(sample, None)
    spec = WaveSpec(
        target="fixed",
        letter="inspector-step-down",
        invite="invitation",
        to="Ofsted <enquiries@ofsted.example.org>",
        where=["inspector=yes"],
        done_label="stepped down",
    )
    wave = create_wave(sample, "Step down", spec, SETTINGS)
    assert (wave["nations"], wave["done_label"]) == (["england"], "stepped down")
    result = launch_wave(sample, "Step down", SETTINGS)
    assert result.created >= 3  # the demo data has serving inspectors of its own
    assert wave_status(sample, "Step down")["done"] == {"label": "stepped down", "letters": 0}
    assert cli("letters", "decide", "Step down", "M100001", "send").exit_code == 0
    assert cli("letters", "decide", "Step down", "M100002", "self").exit_code == 0
    assert cli("letters", "decide", "Step down", "M100003", "opt-out").exit_code == 0
    # Sent by the member themselves counts; ours counts once it has gone, not while it waits.
    assert wave_status(sample, "Step down")["done"]["letters"] == 1
    with SmtpServer() as smtp:
        send_outbox(sample, SETTINGS, SmtpTransport(smtp.url), rate=1000, sleep=lambda s: None)
        letters = [r for r in smtp.recorder.received if ".letter." in r.message["Message-ID"]]
    assert [r.rcpt_tos for r in letters] == [["enquiries@ofsted.example.org"]]
    text = letters[0].message.get_body(("plain",)).get_content()
    assert "stepping down from my work as an Ofsted inspector" in text
    assert "revised inspection framework" in text
    assert wave_status(sample, "Step down")["done"] == {"label": "stepped down", "letters": 2}
    shown = cli("wave", "status", "Step down")
    assert "  stepped down: 2\n" in shown.output
    as_json = cli("wave", "status", "Step down", "--json")
    assert '"label": "stepped down"' in as_json.output and '"letters": 2' in as_json.output


# ---- share links ----------------------------------------------------------------


class Resources(HTMLParser):
    """What a page would load by itself (scripts, styles, images, frames…), and its links."""

    LOADS = {
        "script": "src",
        "img": "src",
        "iframe": "src",
        "frame": "src",
        "embed": "src",
        "object": "data",
        "source": "src",
        "video": "src",
        "audio": "src",
        "input": "src",
    }

    def __init__(self):
        super().__init__()
        self.loads: list[str] = []
        self.links: dict[str, str] = {}
        self.tags: Counter = Counter()
        self._href: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        if tag in self.LOADS and attrs.get(self.LOADS[tag]):
            self.loads.append(attrs[self.LOADS[tag]])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])
        if tag == "img" and attrs.get("srcset"):
            self.loads.append(attrs["srcset"])
        if tag == "a":
            self._href = attrs.get("href")

    def handle_data(self, data):
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href
            self._href = None


def parse(html: str) -> Resources:
    parser = Resources()
    parser.feed(html)
    return parser


def test_share_links_appear_only_after_sending_are_encoded_and_load_nothing_from_elsewhere(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    with Site(sample, settings=SHARING) as site:
        before = requests.get(site.link("M100002"), timeout=10)
        assert "Share by" not in before.text and SHARE_URL not in before.text
        requests.post(
            site.link("M100002"),
            data=site.form("M100002", action="self", text="Dear MP,\n\nHello.\n"),
            timeout=10,
        )
        after = requests.get(site.link("M100002"), timeout=10)
    page = parse(after.text)
    assert page.loads == []  # no script, stylesheet, image or frame from anywhere
    assert page.tags["script"] == page.tags["iframe"] == 0
    assert "default-src 'none'" in after.headers["Content-Security-Policy"]
    links = page.links
    whatsapp = urlsplit(links["Share by WhatsApp"])
    assert (whatsapp.scheme, whatsapp.netloc) == ("https", "wa.me")
    assert parse_qs(whatsapp.query) == {"text": [f"{SHARE_TEXT} {SHARE_URL}"]}
    x = urlsplit(links["Share by X"])
    assert parse_qs(x.query) == {"text": [SHARE_TEXT], "url": [SHARE_URL]}
    assert parse_qs(urlsplit(links["Share by Facebook"]).query) == {"u": [SHARE_URL]}
    assert parse_qs(urlsplit(links["Share by LinkedIn"]).query) == {"url": [SHARE_URL]}
    mail = links["Share by Email"]
    assert mail.startswith("mailto:?subject=")
    # Spaces as %20, not "+", which mail programs show as it is; & and # never end a value early.
    assert "+" not in mail and " " not in mail and "%26" in mail and "%23" in mail
    assert parse_qs(urlsplit(mail).query)["body"] == [f"{SHARE_TEXT}\n\n{SHARE_URL}"]
    assert f'value="{SHARE_URL.replace("&", "&amp;")}"' in after.text  # the URL to copy


def test_no_share_links_without_a_campaign_url(sample):  # noqa: F811
    create_wave(sample, "MPs", MP_WAVE, SETTINGS)
    launch_wave(sample, "MPs", SETTINGS)
    with Site(sample) as site:
        requests.post(
            site.link("M100002"),
            data=site.form("M100002", action="self", text="Dear MP,\n\nHi.\n"),
            timeout=10,
        )
        after = requests.get(site.link("M100002"), timeout=10)
    assert "You sent your letter yourself" in after.text
    assert "Share by" not in after.text


def test_the_pledge_page_offers_share_links_once_pledged(sample):  # noqa: F811
    create_wave(sample, "Signage", PLEDGE, SETTINGS)
    launch_wave(sample, "Signage", SETTINGS)
    with Site(sample, settings=SHARING) as site:
        first = requests.get(site.link("M100001"), timeout=10)
        assert QUESTION in first.text and "Share by" not in first.text
        declined = requests.post(
            site.link("M100001"), data=site.form("M100001", action="decline"), timeout=10
        )
        assert "not for you" in declined.text and "Share by" not in declined.text
        pledged = requests.post(site.link("M100001"), data=site.form("M100001", action="pledge"), timeout=10)
        assert "You have pledged" in pledged.text and "Share by WhatsApp" in pledged.text
        bad = requests.post(site.link("M100001"), data=site.form("M100001", action="send"), timeout=10)
        assert bad.status_code == 400
        forged = requests.post(
            site.link("M100001"), data={**site.form("M100001", action="decline"), "csrf": "x"}, timeout=10
        )
        assert forged.status_code == 400
    assert site.letter("M100001")["state"] == "pledged"
    assert parse(pledged.text).loads == []


def test_share_settings_are_checked_at_start():
    from engine.settings import Settings

    with pytest.raises(
        CampaignError, match=r"^CAMPAIGN_SHARE_URL: 'union.example/x' is not an http\(s\) URL$"
    ):
        Settings.from_env({"CAMPAIGN_SHARE_URL": "union.example/x"})
    with pytest.raises(CampaignError, match=r"^CAMPAIGN_SHARE_TEXT: one line"):
        Settings.from_env({"CAMPAIGN_SHARE_URL": "https://union.example/", "CAMPAIGN_SHARE_TEXT": "a\nb"})


def test_the_pledge_invitation_asks_the_question_and_carries_the_link(sample, cli):  # noqa: F811
    create_wave(sample, "Signage", PLEDGE, SETTINGS)
    shown = cli("wave", "preview", "Signage", "--member", "M100001")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"Pledge (answered on the member's page): {QUESTION}\n")
    assert f"Subject: Will you make this pledge? {QUESTION}" in shown.output
    assert f'  "{QUESTION}"' in shown.output
    assert 'choose "I pledge" or "Not for me"' in shown.output
    assert re.search(r"\n  http://127\.0\.0\.1:8000/l/[\w-]{22}\n", shown.output)


def test_after_the_link_runs_out_the_answer_shows_and_cannot_change(sample):  # noqa: F811
    create_wave(sample, "Signage", PLEDGE, SETTINGS)
    launch_wave(sample, "Signage", SETTINGS)
    with Site(sample) as site:
        requests.post(site.link("M100001"), data=site.form("M100001", action="pledge"), timeout=10)
        with sample.begin() as conn:
            conn.execute(
                letter_table.update()
                .where(letter_table.c.reference == site.letter("M100001")["reference"])
                .values(token_expires_at=utcnow() - timedelta(days=1))
            )
        page = requests.get(site.link("M100001"), timeout=10)
        assert "You have pledged" in page.text and "The link to answer ran out" in page.text
        assert 'value="decline"' not in page.text
        requests.post(site.link("M100001"), data=site.form("M100001", action="decline"), timeout=10)
        # Unanswered and run out: the page offers a new link, as for a letter.
        with sample.begin() as conn:
            conn.execute(
                letter_table.update()
                .where(letter_table.c.reference == site.letter("M100002")["reference"])
                .values(token_expires_at=utcnow() - timedelta(days=1))
            )
        expired = requests.get(site.link("M100002"), timeout=10)
    assert site.letter("M100001")["state"] == "pledged"
    assert expired.status_code == 410 and "This link to check your pledge" in expired.text
