"""The employer contact directory and the gaps report."""

from __future__ import annotations

import json

import pytest
from conftest import DATA, MEMBER_HEADER

from engine.errors import RowErrors
from engine.lookup.employers import employer_gaps, import_contacts
from engine.lookup.resolve import resolve_members
from engine.lookup.schools import import_schools
from engine.members.importer import import_members

HEADER = "Employer key,Name,Kind,Email,Postal address,Salutation\n"


def test_import_contacts_splits_address_lines(engine, write_csv):
    path = write_csv(
        "c.csv",
        HEADER
        + "la:886,Kent County Council,local_authority,,Sessions House|County Road|Maidstone|ME14 1XQ,Dear Director\n",
    )
    result = import_contacts(engine, path)
    assert (result.contacts, result.without_email) == (1, 1)
    with engine.connect() as conn:
        address = conn.exec_driver_sql("SELECT postal_address FROM employer_contact").scalar_one()
    assert address == "Sessions House\nCounty Road\nMaidstone\nME14 1XQ"


def test_bad_contacts_write_nothing(engine, write_csv):
    path = write_csv("c.csv", HEADER + "la:886,Kent,council,x@y,,\n,No Key,other,a@council.example.org,,\n")
    with pytest.raises(RowErrors) as caught:
        import_contacts(engine, path)
    assert (
        caught.value.problems[0]
        == f"{path}:2: kind: 'council' is not one of local_authority, governing_body, academy_trust, other"
    )
    assert f"{path}:3: employer_key: missing" in caught.value.problems


def test_gaps_lists_employers_with_members_but_no_contact_largest_first(engine, write_csv):
    import_schools(engine, DATA / "edubasealldata.csv")
    import_contacts(engine, DATA / "employer-contacts.csv")
    rows = [
        f"M{i},A,B,m{i}@members.example.org,BR8 7RE,{urn},,,,,"
        for i, urn in enumerate(["103255", "103255", "103255", "146620", "119260", "119260", "118402"])
    ]
    import_members(engine, write_csv("m.csv", MEMBER_HEADER + "\n" + "\n".join(rows) + "\n"))
    resolve_members(engine, None)
    assert employer_gaps(engine) == [
        {"employer_key": "la:330", "name": "Birmingham", "members": 3},
        {"employer_key": "la:888", "name": "Lancashire", "members": 2},
        {"employer_key": "trust:TR03410", "name": "Don Valley Academies", "members": 1},
    ]


def test_cli_gaps_json(cli, engine, write_csv):
    import_schools(engine, DATA / "edubasealldata.csv")
    import_members(
        engine, write_csv("m.csv", MEMBER_HEADER + "\nM1,A,B,a@members.example.org,BR8 7RE,103255,,,,,\n")
    )
    resolve_members(engine, None)
    assert json.loads(cli("employers", "gaps", "--json").stdout) == [
        {"employer_key": "la:330", "name": "Birmingham", "members": 1}
    ]


def test_a_line_break_in_a_contact_name_is_refused_but_postal_address_lines_are_not(engine, write_csv):
    text = (
        HEADER
        + 'la:886,"Kent County Council\r\nBcc: everyone@example.org",local_authority,a@kent.example.org,,\n'
        + 'la:330,Birmingham,local_authority,,"1 Centenary Square\nBirmingham\nB1 1TT",Dear Sir\x00\n'
        + 'la:888,Lancashire,local_authority,,"County Hall\r\nPreston\u2028PR1 8XJ",\n'
    )
    path = write_csv("c.csv", text)
    with pytest.raises(RowErrors) as caught:
        import_contacts(engine, path)
    assert caught.value.problems == [
        f"{path}:2: name: contains a line break (U+000D)",
        f"{path}:4: salutation: contains a control character (U+0000)",
    ]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM employer_contact").scalar_one() == 0
    fixed = write_csv("c.csv", text.replace("\r\nBcc: everyone@example.org", "").replace("\x00", ""))
    assert import_contacts(engine, fixed).contacts == 3
    with engine.connect() as conn:
        address = conn.exec_driver_sql(
            "SELECT postal_address FROM employer_contact WHERE employer_key = 'la:888'"
        ).scalar_one()
    assert address == "County Hall\nPreston\nPR1 8XJ"
