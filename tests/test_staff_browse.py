"""Browsing a wave's letters and each employer's and MP's answers: the queries in
engine/reports/browse.py on both backends, and the staff pages over real HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import unescape
from urllib.parse import quote

import pytest
import requests
from sqlalchemy import event, select
from test_staff import PASSWORD, StaffSite
from test_waves import EMPLOYER_WAVE, MP_WAVE, SETTINGS, sample  # noqa: F401

from engine.errors import CampaignError
from engine.letters.launch import launch_wave
from engine.letters.waves import create_wave
from engine.reports.browse import (
    NO_REPLY,
    NOT_CODED,
    NOT_KNOWN,
    LetterFilter,
    check_filter,
    letter_choices,
    list_letters,
    target_letters,
    target_replies,
    target_summary,
    target_table,
)
from engine.store.models import inbound_table, letter_table, member_table, wave_table
from engine.web.accounts import add_user

HOSTILE = '<script>alert("x")</script> =HYPERLINK("http://evil.example")'
MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
THURSDAY = datetime(2026, 11, 5, 15, 30, tzinfo=UTC)  # three working days after MONDAY


def wave_id(engine, name):
    with engine.connect() as conn:
        return conn.execute(select(wave_table.c.id).where(wave_table.c.name == name)).scalar_one()


def wave_letters(engine, name):
    """The wave's first letters, in the order they were made, with their member's region."""
    lt, m = letter_table.c, member_table.c
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(lt.id, lt.reference, lt.target_key, lt.target_name, m.region, m.membership_no)
                .join(member_table, m.id == lt.member_id)
                .where(lt.wave_id == wave_id(engine, name), lt.kind == "letter")
                .order_by(lt.id)
            )
        ]


def add_reply(conn, letter_id, n, *, outcome=None, suggested=None, subject="RE: Wellbeing"):
    conn.execute(
        inbound_table.insert().values(
            dedupe_key=f"<reply-{n}@employer.example>",
            source="test",
            raw=b"From: hr@employer.example\r\n\r\nThank you.",
            kind="reply",
            letter_id=letter_id,
            received_at=THURSDAY,
            subject=subject,
            outcome=outcome,
            suggested_outcome=suggested,
        )
    )


@pytest.fixture
def browsed(sample):  # noqa: F811
    """The sample launched as an employer wave and an MP wave; in the employer wave, letters that
    went, were answered (one reply coded by staff, one only suggested), are overdue or opted out,
    and one member whose name and employer are hostile HTML."""
    engine = sample
    create_wave(engine, "Employers", EMPLOYER_WAVE, SETTINGS)
    launch_wave(engine, "Employers", SETTINGS)
    create_wave(engine, "MPs", MP_WAVE, SETTINGS)
    launch_wave(engine, "MPs", SETTINGS)
    letters = wave_letters(engine, "Employers")
    sent, supportive, suggested, overdue, opted_out = letters[:5]
    lt = letter_table.c
    with engine.begin() as conn:

        def move(letter, **values):
            conn.execute(letter_table.update().where(lt.id == letter["id"]).values(**values))

        move(sent, state="sent", sent_at=MONDAY)
        move(supportive, state="replied", sent_at=MONDAY, replied_at=THURSDAY)
        move(suggested, state="replied", sent_at=MONDAY, replied_at=THURSDAY)
        move(overdue, state="overdue", sent_at=MONDAY, overdue_at=THURSDAY)
        move(opted_out, state="opted_out")
        add_reply(conn, supportive["id"], 1, outcome="supportive", subject=f"RE: {HOSTILE}\r\nBcc: x")
        add_reply(conn, suggested["id"], 2, suggested="refusal")
        conn.execute(
            member_table.update()
            .where(member_table.c.membership_no == letters[5]["membership_no"])
            .values(first_name=HOSTILE, employer_name=HOSTILE, region=None)
        )
    return engine, letters


# ---- the library, on SQLite and PostgreSQL ---------------------------------------------


def test_choices_list_only_the_waves_values_with_their_counts(browsed):
    engine, letters = browsed
    choices = letter_choices(engine, wave_id(engine, "Employers"))
    states = {c["value"]: c["count"] for c in choices["state"]}
    assert states == {
        "drafted": len(letters) - 5,
        "sent": 1,
        "replied": 2,
        "opted_out": 1,
        "overdue": 1,
    }
    # In the order letters move through them, with words, not codes.
    assert [c["value"] for c in choices["state"]] == ["drafted", "sent", "replied", "opted_out", "overdue"]
    assert choices["state"][0]["label"] == "drafted, not yet invited"
    regions = {c["value"]: c["count"] for c in choices["region"]}
    assert sum(regions.values()) == len(letters) and regions[NOT_KNOWN] == 1
    assert choices["region"][-1]["label"] == "(not known)"
    outcomes = {c["value"]: c["count"] for c in choices["outcome"]}
    assert outcomes == {"supportive": 1, "refusal": 1, NO_REPLY: len(letters) - 2}
    employers = {c["label"]: c["count"] for c in choices["employer"]}
    assert employers[HOSTILE] == 1 and sum(employers.values()) == len(letters)


def test_filters_combine_and_the_count_is_of_every_match(browsed):
    engine, letters = browsed
    wave = wave_id(engine, "Employers")
    everything = list_letters(engine, wave, LetterFilter())
    assert everything["total"] == len(letters)
    assert [r["reference"] for r in everything["rows"]] == [r["reference"] for r in letters]

    replied = list_letters(engine, wave, LetterFilter(state="replied"))
    assert replied["total"] == 2
    assert [r["reference"] for r in replied["rows"]] == [letters[1]["reference"], letters[2]["reference"]]
    # The staff's outcome, and the engine's suggestion marked as not yet decided.
    assert [r["outcomes"] for r in replied["rows"]] == [[("supportive", True)], [("refusal", False)]]

    region = letters[1]["region"]
    both = list_letters(engine, wave, LetterFilter(state="replied", region=region))
    expected = [r["reference"] for r in letters[1:3] if r["region"] == region]
    assert [r["reference"] for r in both["rows"]] == expected and both["total"] == len(expected)
    assert list_letters(engine, wave, LetterFilter(state="opted_out", outcome="supportive"))["total"] == 0
    assert (
        list_letters(engine, wave, LetterFilter(outcome="refusal"))["rows"][0]["reference"]
        == (letters[2]["reference"])
    )
    unanswered = list_letters(engine, wave, LetterFilter(outcome=NO_REPLY))
    assert unanswered["total"] == len(letters) - 2
    nowhere = list_letters(engine, wave, LetterFilter(region=NOT_KNOWN))
    assert [r["membership_no"] for r in nowhere["rows"]] == [letters[5]["membership_no"]]
    employer = letters[0]["target_key"]
    by_employer = list_letters(engine, wave, LetterFilter(employer=employer))
    assert by_employer["total"] == sum(1 for r in letters if r["target_key"] == employer)
    # Another wave's letters never show up.
    assert list_letters(engine, wave_id(engine, "MPs"), LetterFilter(state="replied"))["total"] == 0


def test_paging_reads_one_page_with_a_fixed_number_of_queries(browsed):
    engine, letters = browsed
    wave = wave_id(engine, "Employers")
    first = list_letters(engine, wave, LetterFilter(), page=1, per_page=5)
    second = list_letters(engine, wave, LetterFilter(), page=2, per_page=5)
    assert (first["total"], first["pages"]) == (len(letters), -(-len(letters) // 5))
    assert [r["reference"] for r in first["rows"] + second["rows"]] == [r["reference"] for r in letters[:10]]
    # A page past the end shows the last one.
    last = list_letters(engine, wave, LetterFilter(), page=999, per_page=5)
    assert last["page"] == first["pages"] and last["rows"][-1]["reference"] == letters[-1]["reference"]

    statements = []

    def count(*args):
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        list_letters(engine, wave, LetterFilter(), per_page=2)
        few = len(statements)
        statements.clear()
        list_letters(engine, wave, LetterFilter(), per_page=50)
        many = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # The count, the page, and the page's replies: never a query per letter.
    assert few == many == 3


def test_unknown_filter_values_are_refused(browsed):
    engine, letters = browsed
    choices = letter_choices(engine, wave_id(engine, "Employers"))
    with pytest.raises(CampaignError, match=r"^state: 'lost' is not one of this wave's states$"):
        check_filter(choices, {"state": "lost"})
    with pytest.raises(CampaignError, match="region: 'Atlantis'"):
        check_filter(choices, {"region": "Atlantis"})
    with pytest.raises(CampaignError, match="outcome: 'delighted'"):
        check_filter(choices, {"outcome": "delighted"})
    with pytest.raises(CampaignError, match=r"employer: 'x\\r\\n\\x00y'"):
        check_filter(choices, {"employer": "x\r\n\x00y"})
    # A state the engine knows but no letter is in is asked for fairly: none match.
    wanted = check_filter(choices, {"state": "queued", "region": "", "outcome": NOT_CODED})
    assert wanted == LetterFilter(state="queued", outcome=NOT_CODED)


def test_an_employers_summary_letters_and_replies(browsed):
    engine, letters = browsed
    key = letters[1]["target_key"]
    summary = target_summary(engine, "employer", key)
    mine = [r for r in letters if r["target_key"] == key]
    assert summary["name"] == letters[1]["target_name"] and summary["letters"] == len(mine)
    assert summary["replied"] >= 1 and summary["median_working_days"] is not None
    assert summary == next(r for r in target_table(engine, None, "employer") if r["key"] == key)

    found = target_letters(engine, "employer", key)
    assert found["total"] == len(mine)
    answered = next(r for r in found["rows"] if r["reference"] == letters[1]["reference"])
    assert (answered["wave"], answered["working_days"]) == ("Employers", 3)
    replies = target_replies(engine, "employer", key)
    assert replies["total"] >= 1
    assert any(
        r["reference"] == letters[1]["reference"] and r["shown_outcome"] == "supportive"
        for r in replies["rows"]
    )

    assert target_summary(engine, "employer", "no-such-employer") is None
    assert target_summary(engine, "fixed", "fixed") is None
    mps = target_table(engine, None, "mp")
    assert mps and {r["kind"] for r in mps} == {"mp"}
    with pytest.raises(CampaignError, match="kind: 'council'"):
        target_table(engine, None, "council")


# ---- the pages over HTTP ------------------------------------------------------------------


def cells(html: str, row_of: str) -> list[str]:
    """The text of each cell of the table row that holds `row_of`."""
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", html, re.S) if row_of in r)
    return [
        unescape(re.sub(r"<[^>]+>", "", c)).strip()
        for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
    ]


def references(html: str) -> list[str]:
    return re.findall(r'<th scope="row" class="ref">([^<]+)</th>', html)


def test_a_viewer_browses_a_waves_letters_filters_and_pages(browsed):
    engine, letters = browsed
    add_user(engine, "viewer@union.example", "viewer", PASSWORD)
    wave = wave_id(engine, "Employers")
    with StaffSite(engine) as site:
        browser = requests.Session()
        site.login(browser, "viewer@union.example")
        home = browser.get(f"{site.base}/staff/").text
        assert f'<a href="/staff/waves/{wave}/letters">See the letters</a>' in home

        url = f"{site.base}/staff/waves/{wave}/letters"
        page = browser.get(url)
        assert page.status_code == 200 and "<h1>Letters of Employers</h1>" in page.text
        assert f"{len(letters)} letters match; showing 1–{len(letters)}." in page.text
        assert references(page.text) == [r["reference"] for r in letters]
        assert '<label for="filter-state">State</label>' in page.text
        assert '<option value="replied">replied (2)</option>' in page.text
        assert '<option value="queued">' not in page.text  # only what the wave holds
        row = cells(page.text, letters[1]["reference"])
        assert row[3:4] == ["replied"] and row[6:] == ["2 Nov 2026", "5 Nov 2026", "supportive"]
        assert f'href="/staff/members/{letters[1]["membership_no"]}"' in page.text
        assert cells(page.text, letters[2]["reference"])[-1] == "refusal (suggested)"

        narrowed = browser.get(url, params={"state": "replied", "region": letters[1]["region"]})
        expected = [r["reference"] for r in letters[1:3] if r["region"] == letters[1]["region"]]
        assert references(narrowed.text) == expected
        assert '<option value="replied" selected>' in narrowed.text
        assert f"{len(expected)} letter" in narrowed.text

        # Hostile data is shown as text, never as markup.
        assert "<script>" not in page.text and "&lt;script&gt;alert" in page.text

        bad = browser.get(url, params={"state": "lost<b>"})
        assert bad.status_code == 400
        assert "state: &#39;lost&lt;b&gt;&#39; is not one of this wave&#39;s states" in bad.text
        assert "<table" not in bad.text and '<select id="filter-state"' in bad.text
        assert browser.get(url, params={"page": "two"}).status_code == 400
        for missing in ("999999", "abc", "-1"):
            gone = browser.get(f"{site.base}/staff/waves/{missing}/letters")
            assert gone.status_code == 404 and "<h1>No such wave</h1>" in gone.text
            assert "Signed in as viewer@union.example" in gone.text


def test_letters_pages_keep_the_filters_in_next_and_previous(browsed, monkeypatch):
    engine, letters = browsed
    monkeypatch.setattr("engine.web.staff_browse.PAGE_SIZE", 4)
    add_user(engine, "viewer@union.example", "viewer", PASSWORD)
    wave = wave_id(engine, "Employers")
    drafted = [r["reference"] for r in letters[5:]]
    with StaffSite(engine) as site:
        browser = requests.Session()
        site.login(browser, "viewer@union.example")
        first = browser.get(f"{site.base}/staff/waves/{wave}/letters", params={"state": "drafted"}).text
        assert f"{len(drafted)} letters match; showing 1–4." in first
        assert references(first) == drafted[:4]
        following = re.search(r'<a href="([^"]+)" rel="next">Next</a>', first).group(1)
        assert unescape(following) == f"/staff/waves/{wave}/letters?state=drafted&page=2"
        second = browser.get(site.base + unescape(following)).text
        assert references(second) == drafted[4:8] and "showing 5–8." in second
        back = unescape(re.search(r'<a href="([^"]+)" rel="prev">Previous</a>', second).group(1))
        assert back == f"/staff/waves/{wave}/letters?state=drafted"


def test_the_targets_table_and_an_employers_page(browsed):
    engine, letters = browsed
    add_user(engine, "viewer@union.example", "viewer", PASSWORD)
    key = letters[1]["target_key"]
    with StaffSite(engine) as site:
        browser = requests.Session()
        site.login(browser, "viewer@union.example")
        table = browser.get(f"{site.base}/staff/targets", params={"kind": "employer"})
        assert table.status_code == 200 and "<h1>Employers and MPs</h1>" in table.text
        names = re.findall(r'<th scope="row"><a href="/staff/targets/employer/[^"]+">([^<]+)</a>', table.text)
        silent_first = [r["name"] for r in target_table(engine, None, "employer", "silent")]
        assert [unescape(n) for n in names] == silent_first
        by_name = browser.get(f"{site.base}/staff/targets", params={"kind": "employer", "sort": "name"}).text
        sorted_names = re.findall(r'<th scope="row"><a href="[^"]+">([^<]+)</a>', by_name)
        assert sorted_names == sorted(sorted_names)
        assert (
            'aria-sort="ascending"><a href="/staff/targets?kind=employer&amp;sort=name">Name</a>' in by_name
        )
        mps = browser.get(f"{site.base}/staff/targets", params={"kind": "mp"}).text
        assert "/staff/targets/mp/" in mps and "/staff/targets/employer/" not in mps
        for bad in ({"sort": "loudest"}, {"kind": "council"}, {"wave": "999"}, {"page": "0"}):
            refused = browser.get(f"{site.base}/staff/targets", params=bad)
            assert refused.status_code == 400 and 'class="error" role="alert"' in refused.text

        employer = browser.get(f"{site.base}/staff/targets/employer/{key}")
        assert employer.status_code == 200
        # The key as the letters and members pages write it in their links: percent-encoded.
        assert browser.get(f"{site.base}/staff/targets/employer/{quote(key, safe='')}").text == employer.text
        assert f"<h1>{letters[1]['target_name']}</h1>" in employer.text
        summary = target_summary(engine, "employer", key)
        assert f'<td data-figure="letters">{summary["letters"]}</td>' in employer.text
        row = cells(employer.text, letters[1]["reference"])
        assert row == [
            letters[1]["reference"],
            "Employers",
            row[2],
            "replied",
            "2 Nov 2026",
            "5 Nov 2026",
            "3",
        ]
        # The reply's subject came from mail: escaped, and linked to its own page.
        assert "&lt;script&gt;alert" in employer.text and "<script>" not in employer.text
        assert re.search(r'<a href="/staff/replies/\d+">Open reply \d+</a>', employer.text)
        gone = browser.get(f"{site.base}/staff/targets/employer/no-such-employer")
        assert gone.status_code == 404 and "<h1>No such employer or MP</h1>" in gone.text
        for address in (f"council/{key}", "employer/", "employer/la%00x", "mp/%3Cscript%3E"):
            assert browser.get(f"{site.base}/staff/targets/{address}").status_code == 404, address


def test_browse_pages_need_a_session(browsed):
    engine, letters = browsed
    wave = wave_id(engine, "Employers")
    with StaffSite(engine) as site:
        for path in (
            f"/staff/waves/{wave}/letters",
            "/staff/targets",
            f"/staff/targets/employer/{letters[0]['target_key']}",
        ):
            response = requests.get(f"{site.base}{path}", allow_redirects=False)
            assert response.status_code == 303 and response.headers["location"] == "/staff/login"
