"""The GIAS extract and the rule for who employs a school's staff."""

from __future__ import annotations

import pytest
from conftest import DATA
from sqlalchemy import select

from engine.errors import CampaignError, RowErrors
from engine.lookup.schools import employer_of, import_schools
from engine.store.models import school_table

GIAS_HEADER = (
    "URN,LA (code),LA (name),EstablishmentName,TypeOfEstablishment (code),TypeOfEstablishment (name),"
    "EstablishmentTypeGroup (name),EstablishmentStatus (name),Trusts (code),Trusts (name),"
    "TrustSchoolFlag (name),Postcode,GSSLACode (name),ParliamentaryConstituency (code),ExtraColumn"
)


def school(code: int, **kw):
    base = {
        "urn": "100001",
        "name": "Any School",
        "type_code": code,
        "type_name": "x",
        "status": "Open",
        "la_code": "886",
        "la_name": "Kent",
        "trust_code": None,
        "trust_name": None,
    }
    return {**base, **kw}


@pytest.mark.parametrize("code", [1, 3, 7, 14, 15])
def test_local_authority_employs_staff_of_maintained_schools(code):
    employer = employer_of(school(code))
    assert (employer.kind, employer.key, employer.name, employer.problem) == (
        "local_authority",
        "la:886",
        "Kent",
        None,
    )


@pytest.mark.parametrize("code", [2, 5, 12])
def test_governing_body_employs_staff_of_aided_and_foundation_schools(code):
    employer = employer_of(school(code, urn="118955", name="St Nicholas CofE Primary School"))
    assert (employer.kind, employer.key) == ("governing_body", "gb:118955")
    assert employer.name == "The Governing Body of St Nicholas CofE Primary School"


@pytest.mark.parametrize("code", [28, 34, 35, 57])
def test_academy_trust_employs_academy_staff(code):
    employer = employer_of(school(code, trust_code="TR00412", trust_name="Weald and Downs Learning Trust"))
    assert (employer.kind, employer.key, employer.name) == (
        "academy_trust",
        "trust:TR00412",
        "Weald and Downs Learning Trust",
    )


def test_academy_with_blank_trust_is_flagged_not_guessed():
    employer = employer_of(school(34, trust_code="", trust_name=""))
    assert (employer.key, employer.problem) == (None, "no_trust")


@pytest.mark.parametrize("code", [8, 10, 11])
def test_independent_and_non_maintained_schools_are_flagged(code):
    assert employer_of(school(code)).problem == "independent"


def test_closed_school_is_flagged_whatever_its_type():
    assert employer_of(school(1, status="Closed")).problem == "closed"


def test_type_without_a_rule_is_flagged():
    employer = employer_of(school(30, type_name="Welsh establishment"))
    assert (employer.problem, employer.detail) == (
        "not_covered",
        "Welsh establishment: no employer rule for this type",
    )


def test_import_reads_windows_1252_extract_with_many_columns(engine, write_csv):
    text = (
        GIAS_HEADER + "\r\n"
        "137621,886,Kent,Ysgol Gymraeg Brynaf\u00f4n,34,Academy converter,Academies,Open,TR00412,"
        "Weald and Downs Learning Trust,Supported by a trust,TN15 6PA,E10000016,E14001465,x\r\n"
    )
    result = import_schools(engine, write_csv("edubasealldata20261101.csv", text, encoding="cp1252"))
    assert (result.schools, result.by_employer_kind) == (1, {"academy_trust": 1})
    with engine.connect() as conn:
        row = conn.execute(select(school_table)).one()._mapping
    assert row["name"] == "Ysgol Gymraeg Brynaf\u00f4n"
    assert (row["employer_key"], row["constituency_code"]) == ("trust:TR00412", "E14001465")


def test_reimport_replaces_and_bad_rows_keep_the_old_extract(engine, write_csv):
    import_schools(engine, DATA / "edubasealldata.csv")
    bad = write_csv(
        "gias.csv", GIAS_HEADER + "\nABC,886,Kent,X,1,Community school,g,Open,,,,BR8 7RD,E1,E1,x\n"
    )
    with pytest.raises(RowErrors) as caught:
        import_schools(engine, bad)
    assert caught.value.problems == [f"{bad}:2: URN: 'ABC' is not a URN"]
    with engine.connect() as conn:
        assert len(conn.execute(select(school_table.c.urn)).all()) == 29


def test_a_nul_in_a_school_name_is_refused_and_the_old_extract_kept(engine, write_csv):
    import_schools(engine, DATA / "edubasealldata.csv")
    bad = write_csv(
        "gias.csv",
        GIAS_HEADER + "\n118402,886,Kent,Hextable\x00 Primary,1,Community school,g,Open,,,,BR8 7RD,E1,E1,x\n",
        encoding="cp1252",
    )
    with pytest.raises(RowErrors) as caught:
        import_schools(engine, bad)
    assert caught.value.problems == [f"{bad}:2: EstablishmentName: contains a control character (U+0000)"]
    with engine.connect() as conn:
        assert len(conn.execute(select(school_table.c.urn)).all()) == 29


def test_file_missing_gias_columns_is_refused(engine, write_csv):
    path = write_csv("gias.csv", "URN,EstablishmentName\n1,X\n")
    with pytest.raises(CampaignError, match=r"gias.csv:1: missing column\(s\): type_code, status, la_code"):
        import_schools(engine, path)


def test_sample_extract_counts(engine):
    result = import_schools(engine, DATA / "edubasealldata.csv")
    assert result.closed == 1
    assert result.by_employer_kind == {"local_authority": 15, "governing_body": 3, "academy_trust": 6}
    assert result.flagged == {"independent": 1, "no_trust": 2, "not_covered": 1}
