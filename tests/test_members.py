"""Importing the membership export: validation, all-or-nothing, upserts, encodings."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import DATA, MEMBER_HEADER
from sqlalchemy import func, select

from engine.errors import CampaignError, RowErrors
from engine.members.importer import get_member, import_members, iter_members
from engine.store.models import member_table

GOOD = (
    f"{MEMBER_HEADER}\n"
    "M1,Aisha,Khan,aisha@members.example.org,sw1a0aa,118402,1 Orchard Way,London,Teacher,Westminster,London\n"
    "M2,Ben,Ashworth,ben@members.example.org,BR8 7RE,118955,8 Mill Lane,Swanley,Headteacher,Kent,South East\n"
)


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(member_table)).scalar_one()


def test_import_normalises_postcode_and_email(engine, write_csv):
    path = write_csv("m.csv", GOOD.replace("aisha@members.example.org", "aisha@Members.Example.ORG"))
    result = import_members(engine, path)
    assert (result.created, result.updated, result.unchanged, result.rejected) == (2, 0, 0, 0)
    aisha = get_member(engine, "M1")
    assert aisha["postcode"] == "SW1A 0AA"
    assert aisha["email"] == "aisha@members.example.org"
    assert aisha["mp_status"] == "pending"


def test_headers_match_ignoring_case_and_spaces_and_extra_columns_are_kept(engine, write_csv):
    text = (
        "Membership No, FIRST NAME,Last name,E-mail,Post Code,School URN,Years in post\n"
        "M7,Siân,Owen,sian@members.example.org,CF10 1EP,401821,12\n"
    )
    result = import_members(engine, write_csv("m.csv", text))
    assert result.custom_fields == ["years_in_post"]
    member = get_member(engine, "M7")
    assert member["first_name"] == "Siân"
    assert member["custom"] == {"years_in_post": "12"}


def test_missing_required_column_names_the_file_and_column(engine, write_csv):
    path = write_csv("m.csv", "membership_no,first_name,last_name,postcode,school_urn\nM1,A,B,SW1A 0AA,1\n")
    with pytest.raises(CampaignError, match=r"m.csv:1: missing column\(s\): email"):
        import_members(engine, path)


def test_file_with_a_bad_row_imports_nothing_and_lists_every_bad_row(engine, write_csv):
    text = GOOD + (
        "M3,Cat,Doyle,not-an-address,TN13 1AS,1,,,,,\n"
        "M4,Dev,,dev@members.example.org,ZZ99 9ZZ,1,,,,,\n"
        "M1,Dup,Licate,dup@members.example.org,BR8 7RE,1,,,,,\n"
    )
    path = write_csv("members.csv", text)
    with pytest.raises(RowErrors) as caught:
        import_members(engine, path)
    problems = caught.value.problems
    assert problems[0].startswith(f"{path}:4: email: not an address")
    assert f"{path}:5: last_name: missing" in problems
    assert f"{path}:5: postcode: 'ZZ99 9ZZ' is not a UK postcode" in problems
    assert f"{path}:6: membership_no: M1 is also on line 2" in problems
    assert count(engine) == 0


def test_skip_invalid_imports_good_rows_and_writes_rejects_with_reasons(engine, write_csv, tmp_path):
    path = write_csv("members.csv", GOOD + "M3,Cat,Doyle,not-an-address,TN13 1AS,1,,,,,\n")
    rejects = tmp_path / "out" / "rejects.csv"
    result = import_members(engine, path, skip_invalid=True, rejects_path=rejects)
    assert (result.created, result.rejected) == (2, 1)
    with rejects.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert rows[0]["line"] == "4"
    assert rows[0]["field"] == "email"
    assert rows[0]["membership_no"] == "M3"
    assert count(engine) == 2


def test_reimport_updates_without_duplicates_and_keeps_missing_members(engine, write_csv):
    import_members(engine, write_csv("a.csv", GOOD))
    changed = (
        f"{MEMBER_HEADER}\n"
        "M1,Aisha,Khan-Smith,aisha@members.example.org,SW1A 0AA,118402,1 Orchard Way,London,Teacher,Westminster,London\n"
        "M9,New,Person,new@members.example.org,EX16 5BL,113512,,,,,\n"
    )
    result = import_members(engine, write_csv("b.csv", changed))
    assert (result.created, result.updated, result.unchanged) == (1, 1, 0)
    again = import_members(engine, write_csv("b.csv", changed))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert count(engine) == 3  # M2 is not in the new export and stays
    assert get_member(engine, "M1")["last_name"] == "Khan-Smith"


def test_reimport_counts_rows_as_stored_unchanged_and_still_refuses_their_stray_cells_and_repeats(
    engine, write_csv
):
    import_members(engine, write_csv("a.csv", GOOD))
    # M1's postcode was tidied when stored (sw1a0aa → SW1A 0AA), M2's was stored as written.
    again = import_members(engine, write_csv("a.csv", GOOD))
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 2, 0)
    m2 = GOOD.splitlines()[2]
    path = write_csv("b.csv", f"{GOOD}{m2},stray\n{m2}\n")
    with pytest.raises(RowErrors) as caught:
        import_members(engine, path)
    assert caught.value.problems == [
        f"{path}:4: row: more cells than the header has columns (an unquoted comma?)",
        f"{path}:5: membership_no: M2 is also on line 3",
    ]


def test_changed_postcode_resets_what_resolve_found(engine, write_csv):
    import_members(engine, write_csv("a.csv", GOOD))
    with engine.begin() as conn:
        conn.execute(member_table.update().values(mp_status="resolved", constituency_code="E14001465"))
    import_members(engine, write_csv("b.csv", GOOD.replace("BR8 7RE", "TN13 1AS")))
    ben, aisha = get_member(engine, "M2"), get_member(engine, "M1")
    assert (ben["mp_status"], ben["constituency_code"]) == ("pending", None)
    assert (aisha["mp_status"], aisha["constituency_code"]) == ("resolved", "E14001465")


def test_windows_1252_file_from_excel(engine, write_csv):
    text = f"{MEMBER_HEADER}\r\nM5,Zoë,O’Brien,zoe@members.example.org,BT7 1NN,1230456,,Belfast,,,\r\n"
    import_members(engine, write_csv("excel.csv", text, encoding="cp1252"))
    member = get_member(engine, "M5")
    assert (member["first_name"], member["last_name"]) == ("Zoë", "O’Brien")


def test_utf8_with_bom(engine, write_csv):
    text = f"{MEMBER_HEADER}\nM6,Łukasz,Nowak,lukasz@members.example.org,G20 6JL,8421234,,,,,\n"
    import_members(engine, write_csv("bom.csv", text, encoding="utf-8-sig"))
    assert get_member(engine, "M6")["first_name"] == "Łukasz"


def test_file_that_is_neither_utf8_nor_1252_gets_a_clear_error(engine, write_csv, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(
        (MEMBER_HEADER + "\nM1,A\x81,B,a@members.example.org,SW1A 0AA,1,,,,,\n").encode("latin-1")
    )
    with pytest.raises(CampaignError, match=r"bad.csv:2: neither UTF-8 nor Windows-1252 \(byte 0x81\)"):
        import_members(engine, path)
    assert count(engine) == 0


def test_sample_members_file_has_the_deliberate_bad_rows(engine, tmp_path):
    with pytest.raises(RowErrors) as caught:
        import_members(engine, DATA / "members.csv")
    assert len(caught.value.problems) == 4
    result = import_members(
        engine, DATA / "members.csv", skip_invalid=True, rejects_path=tmp_path / "rejects.csv"
    )
    # 63 rows: 4 bad, and 3 members with no school (supply, retired, central staff) import too.
    assert (result.created, result.rejected) == (59, 4)
    assert result.custom_fields == ["years_in_post", "official", "inspector"]


def test_member_without_a_school_urn_imports_with_an_empty_urn(engine, write_csv):
    supply = (
        "M3,Kofi,Boateng,kofi@members.example.org,LS6 1AN,,14 Cardigan Road,Leeds,Supply teacher,Leeds,\n"
    )
    path = write_csv("m.csv", GOOD + supply)
    result = import_members(engine, path)
    assert (result.created, result.rejected) == (3, 0)
    kofi = get_member(engine, "M3")
    assert (kofi["school_urn"], kofi["role"], kofi["employer_status"]) == ("", "Supply teacher", "pending")
    again = import_members(engine, path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_a_file_with_no_school_urn_column_imports(engine, write_csv):
    text = (
        "Membership No,First Name,Last Name,Email,Postcode,Role\n"
        "M1,Shirley,Thompson,shirley@members.example.org,NR1 3QT,Retired\n"
    )
    result = import_members(engine, write_csv("retired.csv", text))
    assert (result.created, result.rejected) == (1, 0)
    assert get_member(engine, "M1")["school_urn"] == ""


def test_sample_members_carry_officials_inspectors_and_members_without_a_school(engine, tmp_path):
    import_members(engine, DATA / "members.csv", skip_invalid=True, rejects_path=tmp_path / "rejects.csv")
    members = {m["membership_no"]: m for m in iter_members(engine)}
    flagged = {
        column: sorted(no for no, m in members.items() if m["custom"].get(column) == "Yes")
        for column in ("official", "inspector")
    }
    assert flagged == {
        "official": ["M100024", "M100031", "M100033", "M100034", "M100035", "M100043", "M100054"],
        "inspector": ["M100002", "M100009", "M100025"],
    }
    no_school = {no: m["role"] for no, m in members.items() if m["school_urn"] == ""}
    assert no_school == {"M100055": "Supply teacher", "M100056": "Retired", "M100057": "Central staff"}
    # Every address is on a reserved domain: the demo can never mail a real person.
    assert all(m["email"].endswith("@members.example.org") for m in members.values())


def test_cli_import_error_exit_status_and_lines(cli, write_csv):
    path = write_csv("members.csv", GOOD + "M3,Cat,Doyle,nope,TN13 1AS,1,,,,,\n")
    result = cli("members", "import", str(path))
    assert result.exit_code == 2
    assert f"{path}:4: email: not an address" in result.stderr
    assert "1 bad row(s); nothing imported" in result.stderr
    assert "Traceback" not in result.output


def test_cli_list_and_show_json(cli, write_csv):
    assert cli("members", "import", str(write_csv("m.csv", GOOD))).exit_code == 0
    listed = json.loads(cli("members", "list", "--json").stdout)
    assert [m["membership_no"] for m in listed] == ["M1", "M2"]
    shown = json.loads(cli("members", "show", "M2", "--json").stdout)
    assert shown["postcode"] == "BR8 7RE"
    missing = cli("members", "show", "NOPE")
    assert missing.exit_code == 2
    assert "no member with membership number 'NOPE'" in missing.stderr


def test_iter_members_filters_by_status(engine, write_csv):
    import_members(engine, write_csv("m.csv", GOOD))
    with engine.begin() as conn:
        conn.execute(
            member_table.update().where(member_table.c.membership_no == "M1").values(mp_status="terminated")
        )
    assert [m["membership_no"] for m in iter_members(engine, mp_status="terminated")] == ["M1"]


# A name with a line break would put a header of the sender's choosing into every email to the
# member; a NUL cannot be stored in PostgreSQL. Each cell below reaches a header or the database.
POISONED = GOOD + (
    'M3,"Cat\r\nBcc: everyone@example.org",Doyle,cat@members.example.org,TN13 1AS,1,,,,,\n'
    "M4,Dev,Pat\x00el,dev@members.example.org,TN13 1AS,1,,,,,\n"
    "M5,Eve,Stone,eve@members.example.org,TN13 1AS,1,,Sevenoaks\u2028Kent,,,\n"
    "M6,Fay,Lee,fay@members.example.org,TN13 1AS,1,,,Head\x85teacher,,\n"
    "M7,Gus,Day,gus@members.example.org,TN13 1AS,1,,,,Kent\x1b[2J,\n"
)


def test_line_breaks_and_control_characters_are_refused_by_file_line_and_field(engine, write_csv):
    path = write_csv("members.csv", POISONED)
    with pytest.raises(RowErrors) as caught:
        import_members(engine, path)
    assert caught.value.problems == [
        f"{path}:4: first_name: contains a line break (U+000D)",
        f"{path}:6: last_name: contains a control character (U+0000)",
        f"{path}:7: town: contains a line break (U+2028)",
        f"{path}:8: role: contains a line break (U+0085)",
        f"{path}:9: branch: contains a control character (U+001B)",
    ]
    assert str(caught.value).endswith(
        "5 bad row(s); nothing imported (fix them, or pass --skip-invalid to import the rest)"
    )
    assert count(engine) == 0


def test_a_control_character_in_an_extra_column_is_refused_too(engine, write_csv):
    text = "membership_no,first_name,last_name,email,postcode,school_urn,Years in post\n"
    text += "M1,Aisha,Khan,aisha@members.example.org,SW1A 0AA,1,1\x002\n"
    path = write_csv("members.csv", text)
    with pytest.raises(RowErrors) as caught:
        import_members(engine, path)
    assert caught.value.problems == [f"{path}:2: years_in_post: contains a control character (U+0000)"]


def test_a_nul_in_a_membership_number_is_refused_by_line_on_import_and_reimport(engine, write_csv):
    # The importer looks stored members up by number before checking rows; PostgreSQL refuses a
    # NUL even in a query, so such a number must reach the checks, not the database.
    text = GOOD + "M1\x002,Dev,Patel,dev@members.example.org,TN13 1AS,1,,,,,\n"
    path = write_csv("members.csv", text)
    for _ in range(2):  # a first import, then a re-import with the others stored
        result = import_members(engine, path, skip_invalid=True)
        assert result.rejected == 1
    assert result.unchanged == count(engine) == 2


def test_skip_invalid_puts_rows_with_control_characters_in_the_rejects_file(engine, write_csv, tmp_path):
    path = write_csv("members.csv", POISONED)
    rejects = tmp_path / "rejects.csv"
    result = import_members(engine, path, skip_invalid=True, rejects_path=rejects)
    assert (result.created, result.rejected) == (2, 5)
    with rejects.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["line"], r["field"], r["problem"], r["membership_no"]) for r in rows] == [
        ("4", "first_name", "contains a line break (U+000D)", "M3"),
        ("6", "last_name", "contains a control character (U+0000)", "M4"),
        ("7", "town", "contains a line break (U+2028)", "M5"),
        ("8", "role", "contains a line break (U+0085)", "M6"),
        ("9", "branch", "contains a control character (U+001B)", "M7"),
    ]
    assert sorted(m["membership_no"] for m in iter_members(engine)) == ["M1", "M2"]


def test_cli_refuses_a_nul_in_one_line_per_row_without_personal_data_or_sql(cli, write_csv):
    """On PostgreSQL a NUL used to abort the import with a traceback printing the SQL and the row."""
    path = write_csv("members.csv", POISONED)
    result = cli("members", "import", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{path}:4: first_name: contains a line break (U+000D)",
        f"{path}:6: last_name: contains a control character (U+0000)",
        f"{path}:7: town: contains a line break (U+2028)",
        f"{path}:8: role: contains a line break (U+0085)",
        f"{path}:9: branch: contains a control character (U+001B)",
        f"Error: {path}: 5 bad row(s); nothing imported (fix them, or pass --skip-invalid to import the rest)",
    ]
    for secret in ("everyone@example.org", "Pat", "dev@members.example.org", "INSERT", "Traceback"):
        assert secret not in result.output
    assert cli("members", "list", "--json").stdout.strip() == "[\n]"


def test_rejects_file_cells_never_run_as_spreadsheet_formulas(engine, write_csv, tmp_path):
    text = (
        "membership_no,first_name,last_name,email,postcode,school_urn,=Evil header\n"
        "M1,Aisha,Khan,aisha@members.example.org,SW1A 0AA,1,fine\n"
        '"=HYPERLINK(""http://evil.example"",""x"")",+cmd|\' /C calc\'!A0,-1+1,@SUM(1+1),'
        '"\tTN13 1AS",1,"\r=1+1"\n'
    )
    rejects = tmp_path / "rejects.csv"
    result = import_members(engine, write_csv("members.csv", text), skip_invalid=True, rejects_path=rejects)
    assert (result.created, result.rejected) == (1, 1)
    with rejects.open(newline="", encoding="utf-8") as f:
        header, row = list(csv.reader(f))
    assert header == [
        "line",
        "field",
        "problem",
        "membership_no",
        "first_name",
        "last_name",
        "email",
        "postcode",
        "school_urn",
        "'=Evil header",
    ]
    assert row[:3] == ["3", "email", "not an address (There must be something before the @-sign.)"]
    assert row[3:] == [
        '\'=HYPERLINK("http://evil.example","x")',
        "'+cmd|' /C calc'!A0",
        "'-1+1",
        "'@SUM(1+1)",
        "'\tTN13 1AS",
        "1",
        "'\r=1+1",
    ]


def test_cli_rejects_file_that_cannot_be_written_imports_nothing(cli, write_csv, tmp_path):
    path = write_csv("members.csv", GOOD + "M3,Cat,Doyle,not-an-address,TN13 1AS,1,,,,,\n")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    result = cli("members", "import", str(path), "--skip-invalid", "--rejects", str(blocker / "rejects.csv"))
    assert (result.exit_code, result.stderr) == (2, f"Error: {blocker}: is a file, not a folder\n")
    assert cli("members", "list", "--json").stdout.strip() == "[\n]"
