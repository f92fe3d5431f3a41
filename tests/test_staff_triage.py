"""Triage: undoing a match and finding a letter (engine/inbox/staff.py), `campaign replies unmatch`,
and the staff pages that sort waiting mail over real HTTP (engine/web/staff_triage.py)."""

# The fixtures come from test_replies and test_waves: naming them as arguments is their use.
# ruff: noqa: F811

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select
from test_replies import SAMPLES, fill, ingested, sent, state_of, stored  # noqa: F401
from test_staff import PASSWORD, StaffSite, events, form_csrf
from test_waves import SETTINGS, sample  # noqa: F401

from engine.cli import main
from engine.errors import CampaignError
from engine.inbox.ingest import Ingester
from engine.inbox.staff import (
    UNMATCHED,
    list_messages,
    match_manually,
    search_letters,
    undo_match,
)
from engine.letters.confirm import letter_for_token, send_for_me
from engine.letters.links import link_token
from engine.store.models import event_table, inbound_table, letter_table, member_table, outbox_table, utcnow
from engine.web.accounts import add_user

STAFF = "caseworker@union.example"
VIEWER = "viewer@union.example"
# The smallest file a PDF reader opens: one empty page.
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>"
    b"endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


def letter_row(engine, letter_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(letter_table).where(letter_table.c.id == letter_id)).one()._mapping)


def follow_ups(engine, letter: dict) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(letter_table).where(
                    letter_table.c.parent_id == letter["id"], letter_table.c.kind == "follow_up"
                )
            )
        ]


def outbox_of(engine, letter_id: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (r.kind, r.status)
            for r in conn.execute(
                select(outbox_table.c.kind, outbox_table.c.status).where(
                    outbox_table.c.letter_id == letter_id
                )
            )
        ]


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def as_utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


def what_a_match_did(engine, letter: dict) -> dict:
    """What a user checks after matching: the letter's state and reply date, and its follow-up."""
    row = letter_row(engine, letter["id"])
    drafted = follow_ups(engine, letter)
    return {
        "state": row["state"],
        "replied_at": as_utc(row["replied_at"]),
        "overdue_at": as_utc(row["overdue_at"]),
        "follow_ups": [
            (
                f["state"],
                f["subject"],
                f["body_text"].replace(f["reference"], "REF"),
                outbox_of(engine, f["id"]),
            )
            for f in drafted
        ],
        "letters": count(engine, letter_table),
        "outbox": count(engine, outbox_table),
    }


# ---- the library ---------------------------------------------------------------------------


def test_match_undo_and_match_again_is_the_same_as_one_match(ingested):
    engine, letters, ids = ingested
    spare = letters["spare1"]
    newsletter = ids["newsletter"]
    before = what_a_match_did(engine, spare)
    assert before["state"] == "sent" and before["follow_ups"] == []

    match_manually(engine, SETTINGS, newsletter, spare["reference"], by=STAFF)
    once = what_a_match_did(engine, spare)
    assert once["state"] == "replied" and len(once["follow_ups"]) == 1
    assert once["follow_ups"][0][3] == [("follow_up_invitation", "queued")]

    done = undo_match(engine, SETTINGS, newsletter, by=STAFF)
    follow_up_reference = done["follow_up_removed"]
    assert done == {
        "reply": newsletter,
        "reference": spare["reference"],
        "letter_state": "sent",
        "restored": [spare["reference"]],
        "follow_up_removed": follow_up_reference,
    }
    assert follow_up_reference
    # Exactly as before the match: the letter, no follow-up, no invitation for it.
    assert what_a_match_did(engine, spare) == before
    message = stored(engine, newsletter)
    assert (message["letter_id"], message["match_method"], message["triage"]) == (None, None, UNMATCHED)
    assert newsletter in {row["id"] for row in list_messages(engine, unmatched=True)}
    assert events(engine, "replies.unmatch") == [
        {
            "reply": newsletter,
            "reference": spare["reference"],
            "restored": [spare["reference"]],
            "follow_up_removed": follow_up_reference,
            "by": STAFF,
        }
    ]

    match_manually(engine, SETTINGS, newsletter, spare["reference"], by=STAFF)
    assert what_a_match_did(engine, spare) == once
    assert [e["by"] for e in events(engine, "replies.match")] == [STAFF, STAFF]
    # A matched message is not matched a second time over the first: undo first.
    with pytest.raises(
        CampaignError, match=f"already matched to {spare['reference']}: undo that match first"
    ):
        match_manually(engine, SETTINGS, newsletter, letters["spare3"]["reference"])


def test_undoing_an_automatic_match_brings_an_overdue_letter_back_and_refuses_once_the_member_acted(sent):
    engine, letters = sent
    letter = letters["spare2"]
    # As `campaign chase` leaves a letter whose reply window passed (the wave has no chaser).
    overdue_at = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            letter_table.update()
            .where(letter_table.c.id == letter["id"])
            .values(state="overdue", overdue_at=overdue_at)
        )
    before = what_a_match_did(engine, letter)
    reply_id = Ingester(engine, SETTINGS).record(fill("fwd-outlook-desktop", letter), "eml")
    assert stored(engine, reply_id)["letter_id"] == letter["id"]  # the engine matched it itself
    matched = what_a_match_did(engine, letter)
    assert matched["state"] == "replied" and len(matched["follow_ups"]) == 1

    done = undo_match(engine, SETTINGS, reply_id)
    assert (done["letter_state"], done["restored"]) == ("overdue", [letter["reference"]])
    assert what_a_match_did(engine, letter) == before
    assert stored(engine, reply_id)["triage"] == UNMATCHED
    with pytest.raises(CampaignError, match="is not matched to any letter: there is nothing to undo"):
        undo_match(engine, SETTINGS, reply_id)

    # Matched again by staff, and this time the member sends the follow-up: it can no longer go.
    match_manually(engine, SETTINGS, reply_id, letter["reference"])
    [follow_up] = follow_ups(engine, letter)
    found = letter_for_token(engine, link_token(SETTINGS.secret, follow_up["link_nonce"]))
    assert send_for_me(engine, SETTINGS, found, found.text, None)
    kept = what_a_match_did(engine, letter)
    with pytest.raises(CampaignError, match="the member has already sent the follow-up"):
        undo_match(engine, SETTINGS, reply_id)
    assert what_a_match_did(engine, letter) == kept
    assert stored(engine, reply_id)["letter_id"] == letter["id"]


def test_a_letter_another_reply_still_answers_stays_replied(sent):
    engine, letters = sent
    letter = letters["spare3"]
    ingester = Ingester(engine, SETTINGS)
    first = ingester.record(fill("fwd-outlook-desktop", letter), "eml")
    second = ingester.record(
        fill("fwd-outlook-desktop", letter).replace(b"FwdDesk0003", b"FwdDesk0003-again"), "eml"
    )
    with engine.begin() as conn:
        # The second was written a day later: once the first is gone, it is the letter's reply.
        conn.execute(
            inbound_table.update()
            .where(inbound_table.c.id == second)
            .values(authored_at=datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
        )
    both = what_a_match_did(engine, letter)
    assert both["state"] == "replied" and len(both["follow_ups"]) == 1

    done = undo_match(engine, SETTINGS, first)
    assert (done["letter_state"], done["restored"], done["follow_up_removed"]) == ("replied", [], None)
    after = what_a_match_did(engine, letter)
    assert after["replied_at"] == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert after["follow_ups"] == both["follow_ups"]

    done = undo_match(engine, SETTINGS, second)
    assert (done["letter_state"], bool(done["follow_up_removed"])) == ("sent", True)
    assert follow_ups(engine, letter) == []


def test_search_letters_by_reference_member_or_target_with_like_characters_taken_literally(sent):
    engine, letters = sent
    letter = letters["spare1"]
    first, last = letter["placeholders"]["MEMBER_NAME"].split(" ", 1)
    by_reference = search_letters(engine, letter["reference"].lower())
    assert [r["reference"] for r in by_reference] == [letter["reference"]]
    assert by_reference[0]["member"] == f"{first} {last}" and by_reference[0]["state"] == "sent"
    # Every word must match one of the columns: a member's name and their employer.
    words = search_letters(engine, f"{last.upper()} {letter['target_name'].split()[0]}")
    assert letter["reference"] in [r["reference"] for r in words]
    assert all(r["member"].endswith(last) or last in r["member"] for r in words)
    assert len(search_letters(engine, "a", limit=5)) == 5
    # % and _ are ordinary characters here, not wildcards: nothing has them.
    assert search_letters(engine, "%") == [] and search_letters(engine, "_") == []
    assert search_letters(engine, "   ") == []


def test_cli_unmatch(sent, db_url):
    engine, letters = sent
    letter = letters["spare1"]
    reply_id = Ingester(engine, SETTINGS).record(fill("fwd-outlook-desktop", letter), "eml")
    env = {"CAMPAIGN_SECRET": SETTINGS.secret}
    result = CliRunner().invoke(
        main, ["--db", db_url, "replies", "unmatch", str(reply_id), "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    done = json.loads(result.output)
    assert (done["reference"], done["letter_state"]) == (letter["reference"], "sent")
    assert done["follow_up_removed"]
    again = CliRunner().invoke(main, ["--db", db_url, "replies", "unmatch", str(reply_id)], env=env)
    assert again.exit_code == 2
    assert f"message {reply_id} is not matched to any letter: there is nothing to undo" in again.output
    assert state_of(engine, letter["id"]) == "sent"


# ---- the pages -----------------------------------------------------------------------------


def signed_in(site: StaffSite, email: str) -> requests.Session:
    session = requests.Session()
    assert site.login(session, email).status_code == 303
    return session


def snapshot(engine) -> tuple:
    """Everything a staff action could change."""
    with engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(select(inbound_table).order_by(inbound_table.c.id))],
            [tuple(r) for r in conn.execute(select(letter_table).order_by(letter_table.c.id))],
            conn.execute(select(func.count()).select_from(outbox_table)).scalar_one(),
            conn.execute(
                select(func.count()).select_from(event_table).where(event_table.c.action.like("replies.%"))
            ).scalar_one(),
        )


def test_staff_sort_the_queue_match_set_the_outcome_undo_and_dismiss(ingested):
    engine, letters, ids = ingested
    add_user(engine, STAFF, "staff", PASSWORD)
    spare = letters["spare1"]
    with StaffSite(engine) as site:
        browser = signed_in(site, STAFF)
        queue = browser.get(f"{site.base}/staff/triage")
        assert queue.status_code == 200
        assert "<h1>Replies to sort</h1>" in queue.text
        waiting = [row["id"] for row in list_messages(engine, unmatched=True)]
        # The one waiting longest first: the page lists them in the opposite order to `replies list`.
        positions = [queue.text.index(f'href="/staff/replies/{i}"') for i in reversed(waiting)]
        assert positions == sorted(positions) and len(positions) >= 3
        assert "This week&#39;s top classroom gadgets" in queue.text

        newsletter = ids["newsletter"]
        page = browser.get(f"{site.base}/staff/replies/{newsletter}")
        assert page.status_code == 200
        assert "EdTech Weekly &lt;news@vendor.example&gt;" in page.text
        assert "To</dt><dd>organising@union.example</dd>" in page.text
        assert "not matched to any letter" in page.text
        csrf = form_csrf(page.text)

        # The search finds the letter by its member's surname; its Match button matches it.
        surname = spare["placeholders"]["MEMBER_NAME"].split(" ", 1)[1]
        found = browser.get(f"{site.base}/staff/replies/{newsletter}", params={"q": surname})
        assert f'aria-label="Match to {spare["reference"]}"' in found.text

        matched = browser.post(
            f"{site.base}/staff/replies/{newsletter}/match",
            data={"csrf": csrf, "reference": spare["reference"]},
            allow_redirects=False,
        )
        assert matched.status_code == 303
        assert matched.headers["location"] == f"/staff/replies/{newsletter}?done=matched"
        shown = browser.get(f"{site.base}{matched.headers['location']}")
        assert f"Matched to letter {spare['reference']}, which is now replied." in shown.text
        assert state_of(engine, spare["id"]) == "replied" and len(follow_ups(engine, spare)) == 1
        assert events(engine, "replies.match")[-1] == {
            "reply": newsletter,
            "reference": spare["reference"],
            "by": STAFF,
        }
        assert "Undo this match" in shown.text and "Save outcome" in shown.text

        outcome = browser.post(
            f"{site.base}/staff/replies/{newsletter}/outcome",
            data={"csrf": csrf, "outcome": "supportive"},
        )
        assert "Outcome saved: Supportive." in outcome.text
        assert '<option value="supportive" selected>' in outcome.text
        assert stored(engine, newsletter)["outcome"] == "supportive"
        assert events(engine, "replies.outcome")[-1]["by"] == STAFF
        refused = browser.post(
            f"{site.base}/staff/replies/{newsletter}/outcome", data={"csrf": csrf, "outcome": "delighted"}
        )
        assert refused.status_code == 400
        assert "Outcome: choose one of the outcomes in the list" in refused.text

        undone = browser.post(f"{site.base}/staff/replies/{newsletter}/undo", data={"csrf": csrf})
        assert "The match was undone: this message waits in the queue again." in undone.text
        assert state_of(engine, spare["id"]) == "sent" and follow_ups(engine, spare) == []
        assert events(engine, "replies.unmatch")[-1]["by"] == STAFF
        # A stale notice in the URL shows nothing the database does not say.
        stale = browser.get(f"{site.base}/staff/replies/{newsletter}?done=matched")
        assert "Matched to letter" not in stale.text

        wrong = browser.post(
            f"{site.base}/staff/replies/{newsletter}/match", data={"csrf": csrf, "reference": "ZZZZZ-ZZZZZ"}
        )
        assert wrong.status_code == 400
        assert (
            "no letter with reference &#39;ZZZZZ-ZZZZZ&#39;" in wrong.text and "Traceback" not in wrong.text
        )

        # Hostile input from a hand-made request: refused in one line, or searched as plain text.
        for reference, error in (
            ("K7M2Q\0-9XH4T", "Letter: a letter&#39;s reference is letters and digits"),
            ("", "Letter: give the reference printed on the letter"),
        ):
            refused = browser.post(
                f"{site.base}/staff/replies/{newsletter}/match", data={"csrf": csrf, "reference": reference}
            )
            assert refused.status_code == 400 and error in refused.text
        hostile = browser.get(f"{site.base}/staff/replies/{newsletter}", params={"q": "50%\0_<b>x</b>"})
        assert hostile.status_code == 200
        assert "No letter matches “50% _&lt;b&gt;x&lt;/b&gt;”." in hostile.text

        dismissed = browser.post(f"{site.base}/staff/replies/{newsletter}/unrelated", data={"csrf": csrf})
        assert "Marked as not about any letter: it has left the queue." in dismissed.text
        assert newsletter not in {row["id"] for row in list_messages(engine, unmatched=True)}
        assert events(engine, "replies.dismiss")[-1]["by"] == STAFF
        # A second click (the back button, a double click) changes nothing more.
        again = browser.post(f"{site.base}/staff/replies/{newsletter}/unrelated", data={"csrf": csrf})
        assert again.status_code == 200 and stored(engine, newsletter)["match_method"] == "dismissed"

        missing = browser.get(f"{site.base}/staff/replies/999999")
        assert missing.status_code == 404 and "No such message" in missing.text
        assert browser.get(f"{site.base}/staff/replies/abc").status_code == 404


def test_a_form_from_elsewhere_is_refused_and_changes_nothing(ingested):
    engine, letters, ids = ingested
    add_user(engine, STAFF, "staff", PASSWORD)
    with StaffSite(engine) as site:
        browser = signed_in(site, STAFF)
        before = snapshot(engine)
        for path, data in (
            (f"/staff/replies/{ids['newsletter']}/match", {"reference": letters["spare1"]["reference"]}),
            (f"/staff/replies/{ids['newsletter']}/unrelated", {}),
            (f"/staff/replies/{ids['fwd-outlook-desktop']}/undo", {}),
            (f"/staff/replies/{ids['fwd-outlook-desktop']}/outcome", {"outcome": "holding"}),
        ):
            for csrf in ("", "forged-value"):
                response = browser.post(
                    f"{site.base}{path}", data={**data, "csrf": csrf}, allow_redirects=False
                )
                assert response.status_code == 400, path
                assert "This form did not come from a page of your session" in response.text
        forged = browser.post(
            f"{site.base}/staff/paper",
            data={"csrf": "forged", "reference": letters["spare2"]["reference"], "received": "20/11/2026"},
            files={"scan": ("scan.pdf", PDF, "application/pdf")},
        )
        assert forged.status_code == 400
        assert snapshot(engine) == before


def test_a_viewer_sees_the_queue_and_messages_but_every_change_is_refused(ingested):
    engine, letters, ids = ingested
    add_user(engine, VIEWER, "viewer", PASSWORD)
    with StaffSite(engine) as site:
        viewer = signed_in(site, VIEWER)
        queue = viewer.get(f"{site.base}/staff/triage")
        assert queue.status_code == 200
        assert "You can look at these messages but not change anything: your role is viewer." in queue.text
        assert "/staff/paper" not in queue.text
        page = viewer.get(f"{site.base}/staff/replies/{ids['newsletter']}")
        assert page.status_code == 200
        assert "You can look at this message but not change anything" in page.text
        csrf = form_csrf(page.text)
        before = snapshot(engine)
        for path, data in (
            (f"/staff/replies/{ids['newsletter']}/match", {"reference": letters["spare1"]["reference"]}),
            (f"/staff/replies/{ids['newsletter']}/unrelated", {}),
            (f"/staff/replies/{ids['fwd-outlook-desktop']}/undo", {}),
            (f"/staff/replies/{ids['fwd-outlook-desktop']}/outcome", {"outcome": "holding"}),
        ):
            response = viewer.post(f"{site.base}{path}", data={**data, "csrf": csrf}, allow_redirects=False)
            assert response.status_code == 403, path
            assert "Not for your role" in response.text
        paper = viewer.post(
            f"{site.base}/staff/paper",
            data={"csrf": csrf, "reference": letters["spare2"]["reference"], "received": "20/11/2026"},
            files={"scan": ("scan.pdf", PDF, "application/pdf")},
        )
        assert paper.status_code == 403 and "Not for your role" in paper.text
        assert viewer.get(f"{site.base}/staff/paper").status_code == 403
        assert snapshot(engine) == before


def test_paper_reply_upload_checks_type_size_reference_and_date(sent):
    engine, letters = sent
    add_user(engine, STAFF, "staff", PASSWORD)
    letter = letters["spare2"]
    with StaffSite(engine) as site:
        browser = signed_in(site, STAFF)
        form = browser.get(f"{site.base}/staff/paper")
        assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text
        csrf = form_csrf(form.text)
        fields = {
            "csrf": csrf,
            "reference": letter["reference"],
            "received": "20/11/2026",
            "author": "Chair of Governors",
            "note": "We will not support this.",
        }
        before = snapshot(engine)
        for changed, scan, error in (
            # A name and a content type say whatever the sender likes: the first bytes decide.
            (
                {},
                ("scan.pdf", b"MZ\x90\x00 not a pdf at all", "application/pdf"),
                "Scan: only a PDF, JPEG or PNG",
            ),
            (
                {},
                ("big.pdf", b"%PDF-1.4\n" + b"0" * (10 * 1024 * 1024), "application/pdf"),
                "Scan: the file is larger than 10 MB",
            ),
            (
                {"reference": "ZZZZZ-ZZZZZ"},
                ("scan.pdf", PDF, "application/pdf"),
                "Reference: no letter with reference",
            ),
            (
                {"reference": "<b>x</b>"},
                ("scan.pdf", PDF, "application/pdf"),
                "Reference: a letter&#39;s reference is letters",
            ),
            (
                {"received": "31/02/2026"},
                ("scan.pdf", PDF, "application/pdf"),
                "Date received: &#39;31/02/2026&#39; is not a date",
            ),
            (
                {"received": "01/01/2099"},
                ("scan.pdf", PDF, "application/pdf"),
                "Date received: that date has not come yet",
            ),
        ):
            response = browser.post(
                f"{site.base}/staff/paper", data={**fields, **changed}, files={"scan": scan}
            )
            assert response.status_code == 400, error
            assert error in response.text
            # The form comes back filled in, for the one field to be put right.
            assert 'value="Chair of Governors"' in response.text
        # Far over the limit: refused from its declared length, before any of it is parsed.
        huge = browser.post(
            f"{site.base}/staff/paper",
            data=fields,
            files={"scan": ("huge.pdf", b"%PDF-1.4\n" + b"0" * (11 * 1024 * 1024), "application/pdf")},
        )
        assert huge.status_code == 400 and "Scan: the file is larger than 10 MB" in huge.text
        assert snapshot(engine) == before

        logged = browser.post(
            f"{site.base}/staff/paper",
            data={**fields, "note": "We will not support this.\0 <script>alert(1)</script>"},
            files={"scan": ("../../Scan\r\nof reply.pdf", PDF, "text/plain")},
            allow_redirects=False,
        )
        assert logged.status_code == 303
        reply_id = int(logged.headers["location"].split("/")[-1].split("?")[0])
        row = stored(engine, reply_id)
        assert (row["source"], row["raw"], row["letter_id"]) == ("paper", PDF, letter["id"])
        # The file's own name, without its folders or the line break smuggled into it.
        name = row["attachment_name"]
        assert name.startswith("Scan") and name.endswith("of reply.pdf")
        assert not any(c in name for c in "/\\\r\n")
        assert row["received_at"].date().isoformat() == "2026-11-20" and "\0" not in row["note"]
        page = browser.get(f"{site.base}{logged.headers['location']}")
        assert f"Paper reply logged on letter {letter['reference']}, which is now replied." in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>" not in page.text
        assert events(engine, "replies.log")[-1] == {
            "reply": reply_id,
            "reference": letter["reference"],
            "by": STAFF,
        }

        # An empty file field is no scan; an ISO date is fine too.
        other = letters["spare3"]
        bare = browser.post(
            f"{site.base}/staff/paper",
            data={**fields, "reference": other["reference"].lower(), "received": "2026-11-21", "author": ""},
            files={"scan": ("", b"", "application/octet-stream")},
        )
        assert bare.status_code == 200 and "Paper reply logged" in bare.text
        with engine.connect() as conn:
            paper = conn.execute(select(inbound_table).where(inbound_table.c.letter_id == other["id"])).one()
        assert (paper.raw, paper.attachment_name, paper.author_name) == (b"", None, other["target_name"])
        assert utcnow() > as_utc(paper.received_at)


def test_undoing_a_reply_to_a_chaser_restores_both_letters(sent, tmp_path):
    from engine.followup.drafts import draft_letter, load_wave
    from engine.letters.confirm import letter_for_member
    from engine.mail.send import send_outbox
    from engine.mail.smtp import FolderTransport

    engine, letters = sent
    original = letters["spare1"]
    # As `campaign chase` leaves it: the letter overdue, its chaser drafted; the member sends the chaser.
    with engine.begin() as conn:
        conn.execute(
            letter_table.update()
            .where(letter_table.c.id == original["id"])
            .values(state="overdue", overdue_at=datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
        )
        wave = load_wave(conn, original["wave_id"], SETTINGS)
        row = dict(
            conn.execute(select(letter_table).where(letter_table.c.id == original["id"])).one()._mapping
        )
        chaser = draft_letter(conn, wave, row, "chaser", SETTINGS, utcnow())
    assert chaser is not None
    with engine.connect() as conn:
        number = conn.execute(
            select(member_table.c.membership_no).where(member_table.c.id == original["member_id"])
        ).scalar_one()
    found = letter_for_member(engine, "Employers", number, "chaser")
    assert send_for_me(engine, SETTINGS, found, found.text, None)
    send_outbox(engine, SETTINGS, FolderTransport(tmp_path / "chased"), rate=10_000, sleep=lambda s: None)
    assert state_of(engine, chaser["id"]) == "sent"
    before = (what_a_match_did(engine, original), what_a_match_did(engine, chaser))

    newsletter = Ingester(engine, SETTINGS).record(fill("newsletter", original), "eml")
    match_manually(engine, SETTINGS, newsletter, chaser["reference"])
    assert (state_of(engine, original["id"]), state_of(engine, chaser["id"])) == ("replied", "replied")
    assert len(follow_ups(engine, original)) == 1

    done = undo_match(engine, SETTINGS, newsletter)
    assert done["restored"] == sorted([original["reference"], chaser["reference"]])
    assert (what_a_match_did(engine, original), what_a_match_did(engine, chaser)) == before
    assert (state_of(engine, original["id"]), state_of(engine, chaser["id"])) == ("overdue", "sent")
