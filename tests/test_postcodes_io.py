"""The postcodes.io client against faked HTTP: batches, nulls, terminated, retries."""

from __future__ import annotations

import json

import pytest
import requests
import responses
from conftest import shared_path
from payloads import INVALID, TERMINATED_NOT_FOUND, bulk_reply, postcode_result, terminated_reply
from responses import matchers

from engine.errors import CampaignError, NetworkUnavailable
from engine.lookup.http import JsonClient
from engine.lookup.postcodes_io import PostcodesIO, answer_from_result

BASE = "https://postcodes.test"


def make_client(tries: int = 3) -> PostcodesIO:
    sleeps: list[float] = []
    client = PostcodesIO(JsonClient("postcodes.io", BASE, tries=tries, backoff=0.5, sleep=sleeps.append))
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


@responses.activate(assert_all_requests_are_fired=True)
def test_bulk_lookup_matches_on_query_not_position():
    responses.post(
        f"{BASE}/postcodes",
        match=[matchers.json_params_matcher({"postcodes": ["BR8 7RE", "EX16 5BL", "ZZ1 1ZZ"]})],
        json=bulk_reply(
            (
                "EX16 5BL",
                postcode_result(
                    "EX16 5BL",
                    "E14001495",
                    "Tiverton and Minehead",
                    code_2010="E14000996",
                    name_2010="Tiverton and Honiton",
                ),
            ),
            ("ZZ1 1ZZ", None),
            ("BR8 7RE", postcode_result("BR8 7RE", "E14001465", "Sevenoaks")),
        ),
    )
    answers = make_client().lookup(["BR8 7RE", "EX16 5BL", "ZZ1 1ZZ"])
    assert answers["BR8 7RE"].constituency_code == "E14001465"
    # The _2024 fields win over the plain ones on an older server.
    assert answers["EX16 5BL"].constituency_code == "E14001495"
    assert answers["EX16 5BL"].constituency_name == "Tiverton and Minehead"
    assert answers["ZZ1 1ZZ"] is None


@responses.activate(assert_all_requests_are_fired=True)
def test_postcode_outside_any_constituency_has_no_code():
    result = postcode_result("GY1 1AA", "L99999999", "", country="Channel Islands")
    responses.post(f"{BASE}/postcodes", json=bulk_reply(("GY1 1AA", result)))
    answer = make_client().lookup(["GY1 1AA"])["GY1 1AA"]
    assert answer.constituency_code is None
    assert answer.detail == "not in any UK Parliament constituency"


@responses.activate(assert_all_requests_are_fired=True)
def test_terminated_postcode_says_when():
    responses.get(f"{BASE}/terminated_postcodes/E1W1UU", json=terminated_reply("E1W 1UU", 2007, 12))
    answer = make_client().explain_unknown("E1W 1UU")
    assert (answer.status, answer.detail) == ("terminated", "terminated in December 2007")


@responses.activate(assert_all_requests_are_fired=True)
def test_unknown_never_terminated_postcode_is_not_found():
    responses.get(f"{BASE}/terminated_postcodes/SA19ZZ", status=404, json=TERMINATED_NOT_FOUND)
    assert make_client().explain_unknown("SA1 9ZZ").status == "not_found"


@responses.activate(assert_all_requests_are_fired=True)
def test_invalid_postcode_is_a_bad_postcode():
    responses.get(f"{BASE}/terminated_postcodes/ZZ11ZZ", status=404, json=INVALID)
    assert make_client().explain_unknown("ZZ1 1ZZ").status == "bad_postcode"


@responses.activate(assert_all_requests_are_fired=True)
def test_429_then_success_retries_after_the_servers_delay():
    responses.post(
        f"{BASE}/postcodes",
        status=429,
        headers={"Retry-After": "2"},
        json={"status": 429, "error": "Too many requests"},
    )
    responses.post(
        f"{BASE}/postcodes",
        json=bulk_reply(("BR8 7RE", postcode_result("BR8 7RE", "E14001465", "Sevenoaks"))),
    )
    client = make_client()
    assert client.lookup(["BR8 7RE"])["BR8 7RE"].constituency_code == "E14001465"
    assert client.requests_made == 2
    assert client.sleeps == [2.0]


@responses.activate(assert_all_requests_are_fired=True)
def test_timeouts_then_success_back_off_exponentially():
    responses.post(f"{BASE}/postcodes", body=requests.ConnectTimeout("slow"))
    responses.post(f"{BASE}/postcodes", body=requests.ConnectionError("reset"))
    responses.post(f"{BASE}/postcodes", json=bulk_reply(("BR8 7RE", None)))
    client = make_client()
    assert client.lookup(["BR8 7RE"]) == {"BR8 7RE": None}
    assert client.sleeps == [0.5, 1.0]


@responses.activate(assert_all_requests_are_fired=True)
def test_persistent_500s_raise_network_unavailable_naming_the_service():
    for _ in range(3):
        responses.post(f"{BASE}/postcodes", status=503, body="Service Unavailable")
    with pytest.raises(NetworkUnavailable, match=r"^postcodes.io: HTTP 503 after 3 tries"):
        make_client().lookup(["BR8 7RE"])


@responses.activate(assert_all_requests_are_fired=True)
def test_400_is_not_retried_and_says_what_the_service_said():
    responses.post(
        f"{BASE}/postcodes",
        status=400,
        json={
            "status": 400,
            "error": "Too many postcodes submitted. Up to 100 postcodes can be bulk requested at a time",
        },
    )
    client = make_client()
    with pytest.raises(CampaignError, match="Too many postcodes submitted"):
        client.lookup(["BR8 7RE"])
    assert client.requests_made == 1


def test_more_than_100_postcodes_is_refused_before_asking():
    with pytest.raises(ValueError):
        make_client().lookup([f"BR8 {i}AA" for i in range(101)])


def test_real_recorded_replies_parse():
    """The documentation's own payloads from ../shared/api read as expected."""
    folder = shared_path("api", "postcodes_io")
    bulk = json.loads((folder / "bulk_PR30SG_M456GN_EX165BL_v18_docs.json").read_text())
    answers = {i["query"]: answer_from_result(i["query"], i["result"]) for i in bulk["result"]}
    assert answers["EX165BL"].constituency_code == "E14001495"
    assert answers["EX165BL"].constituency_name == "Tiverton and Minehead"
    single = json.loads((folder / "lookup_england_BR87RE_v18_docs.json").read_text())
    assert answer_from_result("BR8 7RE", single["result"]).constituency_code == "E14001465"
    with_null = json.loads((folder / "bulk_with_null_recorded.json").read_text())
    assert with_null["result"][0]["result"] is None
