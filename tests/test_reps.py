"""MPs from a CSV and from the Parliament Members API (faked)."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from conftest import DATA, shared_path
from payloads import bulk_reply, contact_reply, mp_member, postcode_result, seat_search

from engine.errors import RowErrors
from engine.lookup.http import JsonClient
from engine.lookup.parliament import MembersAPI
from engine.lookup.postcode_cache import store_answers
from engine.lookup.postcodes_io import answer_from_result
from engine.lookup.reps import fetch_mps, import_mps, list_mps

API = "https://members.test"


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def api(tries: int = 2) -> MembersAPI:
    return MembersAPI(JsonClient("Members API", API, tries=tries, backoff=0, sleep=lambda s: None))


def cache_seats(engine, *seats: tuple[str, str, str]) -> None:
    with engine.begin() as conn:
        store_answers(
            conn, [answer_from_result(pc, postcode_result(pc, code, name)) for pc, code, name in seats]
        )


def test_import_sample_mp_list_with_a_vacant_seat(engine):
    result = import_mps(engine, DATA / "mps.csv")
    assert (result.mps, result.vacant) == (16, 1)
    by_code = {r["constituency_code"]: r for r in list_mps(engine)}
    assert by_code["E14001465"]["name"] == "Harriet Alden MP"
    assert by_code["E14001465"]["address_as"] == "Ms Alden"
    assert by_code["E14001263"]["vacant"] is True


def test_import_rejects_bad_codes_and_duplicates_and_writes_nothing(engine, write_csv):
    path = write_csv(
        "mps.csv",
        "Constituency code,Constituency name,MP name,Party,Email,Address as\n"
        "E1400146,Sevenoaks,A MP,Party,a@parliament.example.org,Ms A\n"
        "E14001495,Tiverton and Minehead,B MP,Party,b@parliament.example.org,Mr B\n"
        "E14001495,Tiverton and Minehead,C MP,Party,not-email,Mr C\n",
    )
    with pytest.raises(RowErrors) as caught:
        import_mps(engine, path)
    assert caught.value.problems == [
        f"{path}:2: constituency_code: 'E1400146' is not a GSS constituency code",
        f"{path}:4: constituency_code: E14001495 is also on line 3",
        f"{path}:4: email: not an address (An email address must have an @-sign.)",
    ]
    assert list_mps(engine) == []


def test_import_refuses_an_mp_name_holding_a_line_break(engine, write_csv):
    path = write_csv(
        "mps.csv",
        "Constituency code,Constituency name,MP name,Party,Email,Address as\n"
        "E14001465,Sevenoaks,Harriet Alden MP\u2028Bcc: x@example.org,Party,a@parliament.example.org,Ms A\n"
        "E14001495,Tiverton and Minehead,B MP,Party\x07,b@parliament.example.org,Mr B\n",
    )
    with pytest.raises(RowErrors) as caught:
        import_mps(engine, path)
    assert caught.value.problems == [
        f"{path}:2: name: contains a line break (U+2028)",
        f"{path}:3: party: contains a control character (U+0007)",
    ]
    assert list_mps(engine) == []


def test_fetch_fills_mps_from_the_members_api(engine, http):
    cache_seats(
        engine,
        ("N16 0JH", "E14001263", "Hackney North and Stoke Newington"),
        ("TN13 1AS", "E14001465", "Sevenoaks"),
        ("PR1 2HE", "E14001437", "Preston"),
    )
    # "contains" search: an abolished seat of a similar name comes back too, and is ignored.
    old = {
        "value": {
            "id": 1,
            "name": "Hackney North and Stoke Newington",
            "endDate": "2024-05-30T00:00:00",
            "currentRepresentation": None,
        },
        "links": [],
    }
    member = mp_member(
        172,
        "Ms Diane Abbott",
        "Rt Hon Diane Abbott MP",
        "Ms Abbott",
        "Independent",
        "Hackney North and Stoke Newington",
        4074,
    )
    http.get(
        f"{API}/api/Location/Constituency/Search",
        match=[
            responses.matchers.query_param_matcher(
                {"searchText": "Hackney North and Stoke Newington", "skip": "0", "take": "20"}
            )
        ],
        json=seat_search("Hackney North and Stoke Newington", 4074, member, extra=[old]),
    )
    http.get(f"{API}/api/Members/172/Contact", json=contact_reply("abbott.mp@parliament.example.org"))
    http.get(
        f"{API}/api/Location/Constituency/Search",
        match=[
            responses.matchers.query_param_matcher({"searchText": "Sevenoaks", "skip": "0", "take": "20"})
        ],
        json=seat_search("Sevenoaks", 4500, None),
    )
    http.get(
        f"{API}/api/Location/Constituency/Search",
        match=[responses.matchers.query_param_matcher({"searchText": "Preston", "skip": "0", "take": "20"})],
        json={"items": [], "totalResults": 0, "resultContext": "preston", "skip": 0, "take": 20, "links": []},
    )
    result = fetch_mps(engine, api())
    assert (result.mps, result.vacant, result.not_found) == (1, 1, ["E14001437 Preston"])
    by_code = {r["constituency_code"]: r for r in list_mps(engine)}
    hackney = by_code["E14001263"]
    assert (hackney["name"], hackney["address_as"], hackney["party"]) == (
        "Ms Diane Abbott",
        "Ms Abbott",
        "Independent",
    )
    # The Parliamentary office email, never the constituency office's.
    assert hackney["email"] == "abbott.mp@parliament.example.org"
    assert hackney["parliament_constituency_id"] == 4074
    assert by_code["E14001465"]["vacant"] is True


def test_fetch_keeps_what_it_got_when_the_network_drops(engine, http):
    cache_seats(
        engine, ("TN13 1AS", "E14001465", "Sevenoaks"), ("EX16 5BL", "E14001495", "Tiverton and Minehead")
    )
    http.get(f"{API}/api/Location/Constituency/Search", json=seat_search("Sevenoaks", 4500, None))
    http.get(f"{API}/api/Location/Constituency/Search", body=requests.ConnectionError("down"))
    http.get(f"{API}/api/Location/Constituency/Search", body=requests.ConnectionError("down"))
    result = fetch_mps(engine, api())
    assert result.stopped.startswith("Members API: could not connect after 2 tries")
    assert [r["constituency_code"] for r in list_mps(engine)] == ["E14001465"]


def test_real_recorded_member_payload_fields_exist():
    """Our reading of a member follows the recorded API payload in ../shared/api."""
    member = json.loads(shared_path("api", "parliament", "member_172_recorded.json").read_text())["value"]
    assert {"nameDisplayAs", "nameFullTitle", "nameAddressAs"} <= member.keys()
    assert member["latestParty"]["name"] == "Independent"
    shape = json.loads(
        shared_path("api", "parliament", "constituency_search_SHAPE_assembled.json").read_text()
    )
    assert shape["items"][0]["value"]["currentRepresentation"]["member"]["value"]["id"] == 172


def test_cli_reps_import_and_list_json(cli, tmp_path):
    assert (
        cli("reps", "import", str(DATA / "mps.csv")).stdout.strip()
        == f"{DATA / 'mps.csv'}: 16 MP(s), 1 vacant seat(s)."
    )
    listed = json.loads(cli("reps", "list", "--json").stdout)
    assert len(listed) == 17


def test_bulk_payload_helper_matches_the_recorded_shape():
    recorded = json.loads(
        shared_path("api", "postcodes_io", "lookup_england_BR87RE_v18_docs.json").read_text()
    )
    ours = bulk_reply(("BR8 7RE", postcode_result("BR8 7RE", "E14001465", "Sevenoaks")))["result"][0][
        "result"
    ]
    assert set(ours) <= set(recorded["result"])
    assert set(ours["codes"]) <= set(recorded["result"]["codes"])


def test_cli_fetch_before_resolve_says_what_to_do(cli):
    result = cli("reps", "fetch")
    assert result.exit_code == 2
    assert "no constituencies known yet: run `campaign resolve` first" in result.stderr
