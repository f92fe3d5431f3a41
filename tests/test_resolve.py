"""Resolving members to constituency, MP and employer, against faked postcodes.io."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from conftest import DATA, MEMBER_HEADER
from payloads import NOT_FOUND, TERMINATED_NOT_FOUND, bulk_reply, postcode_result, terminated_reply

from engine.lookup.employers import import_contacts
from engine.lookup.http import JsonClient
from engine.lookup.postcodes_io import PostcodesIO
from engine.lookup.reps import import_mps
from engine.lookup.resolve import resolve_members
from engine.lookup.schools import import_schools
from engine.members.importer import get_member, import_members

BASE = "https://postcodes.test"
SEATS = {
    "BR8 7RE": ("E14001465", "Sevenoaks"),
    "TN13 1AS": ("E14001465", "Sevenoaks"),
    "EX16 5BL": ("E14001495", "Tiverton and Minehead"),
    "N16 0JH": ("E14001263", "Hackney North and Stoke Newington"),
    "PR1 2HE": ("E14001437", "Preston"),
}


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def answer_known(request):
    """A bulk endpoint that answers like postcodes.io for the postcodes in SEATS."""
    asked = json.loads(request.body)["postcodes"]
    items = []
    for pc in asked:
        seat = SEATS.get(pc)
        items.append((pc, postcode_result(pc, *seat) if seat else None))
    return 200, {}, json.dumps(bulk_reply(*items))


def client(tries: int = 2) -> PostcodesIO:
    return PostcodesIO(JsonClient("postcodes.io", BASE, tries=tries, backoff=0, sleep=lambda s: None))


def members(write_csv, engine, *rows: str, name: str = "m.csv") -> None:
    import_members(engine, write_csv(name, MEMBER_HEADER + "\n" + "\n".join(rows) + "\n"))


def row(no: str, postcode: str, urn: str = "118402") -> str:
    return f"{no},First{no},Last{no},{no.lower()}@members.example.org,{postcode},{urn},,,,,"


@pytest.fixture
def reference_data(engine):
    import_mps(engine, DATA / "mps.csv")
    import_schools(engine, DATA / "edubasealldata.csv")
    import_contacts(engine, DATA / "employer-contacts.csv")


def test_resolve_fills_constituency_mp_and_employer(engine, http, write_csv, reference_data):
    members(
        write_csv,
        engine,
        row("M1", "BR8 7RE"),
        row("M2", "BR8 7RE", "137621"),
        row("M3", "EX16 5BL", "113512"),
    )
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    summary = resolve_members(engine, client())
    m1 = get_member(engine, "M1")
    assert (m1["mp_status"], m1["constituency_code"], m1["constituency_name"]) == (
        "resolved",
        "E14001465",
        "Sevenoaks",
    )
    assert (m1["employer_status"], m1["employer_key"], m1["employer_name"]) == ("resolved", "la:886", "Kent")
    assert get_member(engine, "M2")["employer_key"] == "trust:TR00412"
    assert get_member(engine, "M3")["constituency_code"] == "E14001495"
    assert summary.mp == {"resolved": 3}
    assert (summary.postcodes_asked, summary.requests) == (2, 1)


def test_second_resolve_makes_no_requests(engine, http, write_csv, reference_data):
    members(write_csv, engine, row("M1", "BR8 7RE"), row("M2", "EX16 5BL"))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    resolve_members(engine, client())
    first_stamp = get_member(engine, "M1")["resolved_at"]
    again = client()
    summary = resolve_members(engine, again)
    assert again.requests_made == 0
    assert summary.mp == {"resolved": 2}
    # Nothing changed, so nothing was rewritten.
    assert get_member(engine, "M1")["resolved_at"] == first_stamp


def test_unknown_postcodes_are_explained_terminated_or_not_found(engine, http, write_csv, reference_data):
    members(write_csv, engine, row("M1", "E1W 1UU"), row("M2", "SA1 9ZZ"), row("M3", "BR8 7RE"))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    http.get(f"{BASE}/terminated_postcodes/E1W1UU", json=terminated_reply("E1W 1UU", 2019, 3))
    http.get(f"{BASE}/terminated_postcodes/SA19ZZ", status=404, json=TERMINATED_NOT_FOUND)
    summary = resolve_members(engine, client())
    gone = get_member(engine, "M1")
    assert (gone["mp_status"], gone["mp_detail"]) == ("terminated", "terminated in March 2019")
    assert get_member(engine, "M2")["mp_status"] == "not_found"
    assert summary.mp == {"resolved": 1, "terminated": 1, "not_found": 1}


def test_vacant_seat_and_seat_with_no_mp_on_record_are_no_mp(engine, http, write_csv, reference_data):
    members(write_csv, engine, row("M1", "N16 0JH"), row("M2", "PR1 2HE"))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    resolve_members(engine, client())
    vacant, missing = get_member(engine, "M1"), get_member(engine, "M2")
    assert (vacant["mp_status"], vacant["mp_detail"]) == (
        "no_mp",
        "seat vacant: Hackney North and Stoke Newington",
    )
    assert (missing["mp_status"], missing["mp_detail"]) == ("no_mp", "no MP on record for Preston")
    assert missing["constituency_code"] == "E14001437"


def test_network_down_keeps_cached_members_and_marks_the_rest(engine, http, write_csv, reference_data):
    members(write_csv, engine, row("M1", "BR8 7RE"))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    resolve_members(engine, client())
    members(write_csv, engine, row("M1", "BR8 7RE"), row("M2", "EX16 5BL"), name="n.csv")
    http.reset()
    http.post(f"{BASE}/postcodes", body=requests.ConnectionError("network is unreachable"))
    http.post(f"{BASE}/postcodes", body=requests.ConnectionError("network is unreachable"))
    summary = resolve_members(engine, client(tries=2))
    assert summary.network == "unavailable"
    assert summary.network_message == f"postcodes.io: could not connect after 2 tries ({BASE}/postcodes)"
    assert get_member(engine, "M1")["mp_status"] == "resolved"
    waiting = get_member(engine, "M2")
    assert waiting["mp_status"] == "pending"
    assert "re-run `campaign resolve`" in waiting["mp_detail"]
    # The next run with a network finishes the job.
    http.reset()
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    assert resolve_members(engine, client()).mp == {"resolved": 2}


def test_offline_resolve_asks_nothing(engine, http, write_csv, reference_data):
    members(write_csv, engine, row("M1", "BR8 7RE"))
    summary = resolve_members(engine, None)
    assert summary.network == "offline"
    assert summary.mp == {"pending": 1}
    assert len(http.calls) == 0


def test_postcodes_are_asked_once_each_in_batches_of_100(engine, http, write_csv, reference_data):
    distinct = [f"BR{a} {b}{c}" for a in range(1, 10) for b in range(10) for c in ("AB", "AD")][:150]
    rows = [row(f"M{i}", distinct[i % 150]) for i in range(400)]
    members(write_csv, engine, *rows)
    seen: list[int] = []

    def reply(request):
        asked = json.loads(request.body)["postcodes"]
        seen.append(len(asked))
        return (
            200,
            {},
            json.dumps(bulk_reply(*[(pc, postcode_result(pc, "E14001465", "Sevenoaks")) for pc in asked])),
        )

    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=reply)
    summary = resolve_members(engine, client())
    assert sorted(seen) == [50, 100]
    assert summary.mp == {"resolved": 400}


def test_refresh_asks_again_and_replaces_the_cached_answer(engine, http, write_csv, reference_data):
    members(write_csv, engine, row("M1", "BR8 7RE"))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    resolve_members(engine, client())
    http.reset()
    http.post(
        f"{BASE}/postcodes",
        json=bulk_reply(("BR8 7RE", postcode_result("BR8 7RE", "E14001495", "Tiverton and Minehead"))),
    )
    resolve_members(engine, client(), refresh=True)
    assert get_member(engine, "M1")["constituency_code"] == "E14001495"


def test_unknown_and_closed_schools_are_reported(engine, http, write_csv, reference_data):
    members(
        write_csv,
        engine,
        row("M1", "BR8 7RE", "999999"),
        row("M2", "BR8 7RE", "107120"),
        row("M3", "BR8 7RE", "112050"),
        row("M4", "BR8 7RE", "148101"),
    )
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    summary = resolve_members(engine, client())
    unknown = get_member(engine, "M1")
    assert (unknown["employer_status"], unknown["employer_detail"]) == (
        "unknown_urn",
        "URN 999999 is not in the schools list",
    )
    assert get_member(engine, "M2")["employer_status"] == "closed"
    assert get_member(engine, "M3")["employer_status"] == "independent"
    assert get_member(engine, "M4")["employer_status"] == "no_trust"
    assert summary.employer == {"unknown_urn": 1, "closed": 1, "independent": 1, "no_trust": 1}


def test_member_without_a_school_has_no_employer_and_still_an_mp(
    cli, http, write_csv, reference_data, engine
):
    members(write_csv, engine, row("M1", "BR8 7RE"), row("M2", "TN13 1AS", ""))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    summary = resolve_members(engine, client())
    supply = get_member(engine, "M2")
    assert (supply["mp_status"], supply["constituency_code"]) == ("resolved", "E14001465")
    assert (supply["employer_status"], supply["employer_key"], supply["employer_detail"]) == (
        "no_employer",
        None,
        "no school on record (supply, central or retired staff)",
    )
    assert summary.employer == {"resolved": 1, "no_employer": 1}
    # The same answer in every place that lists members or employers.
    text = cli("resolve", "--offline").stdout
    assert "Employer: resolved 1, no school (no employer) 1\n" in text
    listed = json.loads(cli("members", "list", "--employer-status", "no_employer", "--json").stdout)
    assert [(m["membership_no"], m["school_urn"], m["employer_name"]) for m in listed] == [("M2", "", None)]
    assert "no_employer" in cli("members", "list", "--limit", "5").stdout.split("\n")[2]
    # No school means no employer, not an employer missing from the directory.
    assert json.loads(cli("employers", "gaps", "--json").stdout) == []
    # Given a school later, the member resolves to its employer.
    members(write_csv, engine, row("M2", "TN13 1AS", "118402"), name="again.csv")
    resolve_members(engine, None)
    assert get_member(engine, "M2")["employer_key"] == "la:886"


def test_cli_resolve_reads_postcodes_io_url_and_prints_summary(cli, http, write_csv, reference_data, engine):
    members(write_csv, engine, row("M1", "BR8 7RE"), row("M2", "SA1 9ZZ", "999999"))
    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=answer_known)
    http.get(f"{BASE}/terminated_postcodes/SA19ZZ", status=404, json=NOT_FOUND)
    result = cli("resolve", env={"POSTCODES_IO_URL": BASE})
    assert result.exit_code == 0, result.output
    assert "MP:       resolved 1, not found 1" in result.stdout
    assert "Employer: resolved 1, unknown URN 1" in result.stdout
    assert "postcodes.io: 2 postcode(s) asked in 2 request(s)." in result.stdout


def test_cli_resolve_without_network_says_what_happened_in_one_line(
    cli, http, write_csv, engine, reference_data
):
    members(write_csv, engine, row("M1", "BR8 7RE"))
    for _ in range(2):
        http.post(f"{BASE}/postcodes", body=requests.ConnectionError("unreachable"))
    result = cli(
        "resolve",
        "--json",
        env={"POSTCODES_IO_URL": BASE, "CAMPAIGN_HTTP_TRIES": "2", "CAMPAIGN_HTTP_BACKOFF": "0"},
    )
    summary = json.loads(result.stdout)
    assert (summary["network"], summary["mp"]) == ("unavailable", {"pending": 1})
    text = cli("resolve", "--offline")
    assert "Offline: 1 member(s) have uncached postcodes and wait for a run with network." in text.stdout


def test_batches_that_fail_leave_their_members_pending_and_keep_the_rest(
    engine, http, write_csv, reference_data
):
    distinct = [f"TN{a} {b}{c}" for a in range(1, 10) for b in range(10) for c in ("AB", "AD", "AE")]
    members(write_csv, engine, *[row(f"M{i}", pc) for i, pc in enumerate(distinct)])
    failing = "TN6 5AB"  # in the second of three batches, in postcode order

    def reply(request):
        asked = json.loads(request.body)["postcodes"]
        if failing in asked:
            raise requests.ConnectionError("connection reset")
        return (
            200,
            {},
            json.dumps(bulk_reply(*[(pc, postcode_result(pc, "E14001465", "Sevenoaks")) for pc in asked])),
        )

    http.add_callback(responses.POST, f"{BASE}/postcodes", callback=reply)
    summary = resolve_members(engine, client(tries=2), concurrency=1)
    assert summary.network == "unavailable"
    # The batch after the failing one is asked too: one bad batch holds back no other.
    assert summary.mp == {"resolved": 170, "pending": 100}
    assert get_member(engine, "M0")["mp_status"] == "resolved"
    assert get_member(engine, f"M{len(distinct) - 1}")["mp_status"] == "resolved"
    assert get_member(engine, f"M{distinct.index(failing)}")["mp_status"] == "pending"
