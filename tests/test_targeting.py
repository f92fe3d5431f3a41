"""Wave targeting: the nations a wave covers, and --where on any imported column."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest
from conftest import ROOT, TEST_SECRET
from test_waves import EMPLOYER_WAVE, MP_WAVE, sample  # noqa: F401  (the sample-data fixture)

from engine.errors import CampaignError
from engine.letters.documents import iter_letters
from engine.letters.launch import launch_wave
from engine.letters.waves import WaveSpec, create_wave, edit_wave, get_wave
from engine.lookup.employers import import_contacts
from engine.lookup.postcode_cache import load_cache_file
from engine.lookup.reps import import_mps
from engine.lookup.resolve import resolve_members
from engine.lookup.schools import import_schools
from engine.members.importer import import_members
from engine.settings import Settings

SETTINGS = Settings.from_env({"CAMPAIGN_SECRET": TEST_SECRET}, templates_dir=str(ROOT / "templates"))

# One constituency in each nation: (postcode, GSS code, name).
PLACES = {
    "england": ("TN13 1AA", "E14001465", "Sevenoaks"),
    "wales": ("CF11 7AB", "W07000090", "Cardiff South and Penarth"),
    "scotland": ("EH10 4AA", "S14000024", "Edinburgh South"),
    "northern_ireland": ("BT4 1AA", "N05000001", "Belfast East"),
}
# GIAS: an English LA school, a Welsh one with its constituency, a Welsh one known only by LA code.
SCHOOLS = """URN,LA (code),LA (name),EstablishmentName,TypeOfEstablishment (code),\
TypeOfEstablishment (name),EstablishmentStatus (name),Trusts (code),Trusts (name),Postcode,\
ParliamentaryConstituency (code)
100001,886,Kent,Sevenoaks Primary,1,Community school,Open,,,TN13 1AA,E14001465
400001,681,Cardiff,Ysgol Glan Taf,1,Community school,Open,,,CF11 7AB,W07000090
400002,673,Powys,Ysgol y Drenewydd,1,Community school,Open,,,SY16 1AA,
"""
CONTACTS = """Employer key,Name,Kind,Email,Postal address,Salutation
la:886,Kent County Council,local_authority,hr@kent.example.org,Maidstone,Director
la:681,Cardiff Council,local_authority,hr@cardiff.example.org,Cardiff,Director
la:673,Powys County Council,local_authority,hr@powys.example.org,Llandrindod Wells,Director
"""
# (membership no, where they live, school, role, branch, officials)
MEMBERS = [
    ("T1", "england", "100001", "Headteacher", "Sevenoaks", "yes"),
    ("T2", "england", "100001", "Deputy", "", "no"),
    ("T3", "england", "100001", "Teacher", "Sevenoaks", "yes"),
    ("T4", "wales", "100001", "Teacher", "Sevenoaks", "no"),  # lives in Wales, works in England
    ("T5", "scotland", "400001", "Headteacher", "Cardiff", ""),
    ("T6", "northern_ireland", "400002", "Teacher", "", "yes"),
]


@pytest.fixture
def four_nations(engine, tmp_path):
    """Six members in the four nations, imported and resolved offline through the real importers."""
    rows = ["Membership No,First Name,Last Name,Email,Postcode,School URN,Role,Branch,Officials"]
    for no, nation, urn, role, branch, officials in MEMBERS:
        rows.append(
            f"{no},Ann,{no},{no.lower()}@members.example.org,{PLACES[nation][0]},{urn},{role},{branch},{officials}"
        )
    (tmp_path / "members.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "schools.csv").write_text(SCHOOLS)
    (tmp_path / "contacts.csv").write_text(CONTACTS)
    mps = ["Constituency code,Constituency name,MP name,Party,Email,Address as"]
    lookups = []
    for nation, (postcode, code, name) in PLACES.items():
        mps.append(f"{code},{name},MP for {name},Independent,mp.{nation}@parliament.example.org,Ms {nation}")
        lookups.append(
            {
                "query": postcode,
                "result": {
                    "postcode": postcode,
                    "country": nation.replace("_", " ").title(),
                    "parliamentary_constituency_2024": name,
                    "codes": {"parliamentary_constituency_2024": code},
                },
            }
        )
    (tmp_path / "mps.csv").write_text("\n".join(mps) + "\n")
    (tmp_path / "postcodes.json").write_text(json.dumps({"status": 200, "result": lookups}))
    import_members(engine, tmp_path / "members.csv")
    import_schools(engine, tmp_path / "schools.csv")
    import_contacts(engine, tmp_path / "contacts.csv")
    import_mps(engine, tmp_path / "mps.csv")
    load_cache_file(engine, tmp_path / "postcodes.json")
    resolve_members(engine, None)
    return engine


def launched(engine, name: str, **spec) -> tuple[set[str], dict[str, str]]:
    """(members who got a letter, {member left out: reason}) after creating and launching a wave."""
    spec = {"target": "mp", "letter": "mp-inspection", "invite": "invitation", **spec}
    create_wave(engine, name, WaveSpec(**spec), SETTINGS)
    result = launch_wave(engine, name, SETTINGS, list_skipped=True)
    left_out = {s["membership_no"]: s["reason"] for s in result.skipped_members}
    everyone = {m[0] for m in MEMBERS}
    return everyone - set(left_out), left_out


def test_mp_wave_for_england_leaves_out_members_by_constituency(four_nations):
    letters, left_out = launched(four_nations, "England MPs", nations="england")
    assert letters == {"T1", "T2", "T3"}
    assert left_out == {"T4": "outside_nations", "T5": "outside_nations", "T6": "outside_nations"}
    result = launch_wave(four_nations, "England MPs", SETTINGS, list_skipped=True)
    details = {s["membership_no"]: s["detail"] for s in result.skipped_members}
    assert details["T4"] == "constituency in Wales; the wave covers England"
    assert details["T6"] == "constituency in Northern Ireland; the wave covers England"


def test_mp_wave_for_several_nations_and_all(four_nations):
    letters, _ = launched(four_nations, "GB", nations="england, wales,Scotland")
    assert letters == {"T1", "T2", "T3", "T4", "T5"}
    letters, _ = launched(four_nations, "UK", nations="all")
    assert letters == {m[0] for m in MEMBERS}
    assert get_wave(four_nations, "UK")["nations"] is None


def test_employer_wave_goes_by_the_school_country_not_the_home(four_nations):
    letters, left_out = launched(
        four_nations, "Employers", target="employer", letter="employer-wellbeing", nations="england"
    )
    # T4 lives in Wales but works in England; T5's school has a Welsh constituency code, and
    # T6's school none, but a Welsh LA code (673).
    assert letters == {"T1", "T2", "T3", "T4"}
    assert left_out == {"T5": "outside_nations", "T6": "outside_nations"}


def test_nations_default_from_the_letter_template_front_matter(four_nations, tmp_path):
    source = (ROOT / "templates" / "letters" / "mp-inspection.txt").read_text()
    marked = tmp_path / "wales-only.txt"
    marked.write_text("{# nations: wales #}\n" + source)
    assert launched(four_nations, "Marked", letter=str(marked))[0] == {"T4"}
    assert get_wave(four_nations, "Marked")["nations"] == ["wales"]
    # --nations overrides the template; a template without the line reaches every nation.
    assert launched(four_nations, "Overridden", letter=str(marked), nations="scotland")[0] == {"T5"}
    plain = tmp_path / "plain.txt"
    plain.write_text(source.replace("{# nations: england #}\n", ""))
    create_wave(
        four_nations, "Plain", WaveSpec(target="mp", letter=str(plain), invite="invitation"), SETTINGS
    )
    assert get_wave(four_nations, "Plain")["nations"] is None
    edit_wave(four_nations, "Plain", WaveSpec(letter=str(marked)), SETTINGS)
    assert get_wave(four_nations, "Plain")["nations"] == ["wales"]


def test_bad_nation_is_refused(four_nations, tmp_path):
    with pytest.raises(CampaignError, match=r"^--nations: 'cornwall' is not a nation"):
        create_wave(
            four_nations,
            "X",
            WaveSpec(target="mp", letter="mp-inspection", invite="invitation", nations="england,cornwall"),
            SETTINGS,
        )
    marked = tmp_path / "bad.txt"
    marked.write_text("{# nations: englnd #}\n" + (ROOT / "templates/letters/mp-inspection.txt").read_text())
    with pytest.raises(CampaignError, match=r"^bad.txt:1: nations: 'englnd' is not a nation"):
        create_wave(
            four_nations, "X", WaveSpec(target="mp", letter=str(marked), invite="invitation"), SETTINGS
        )


def test_where_one_column(four_nations):
    letters, left_out = launched(four_nations, "Heads", where=["role=headteacher"], nations="all")
    assert letters == {"T1", "T5"}
    assert set(left_out.values()) == {"not_selected"}


def test_where_several_columns_including_a_custom_field(four_nations):
    letters, _ = launched(four_nations, "Officials", where=["role=teacher", "officials=yes"], nations="all")
    assert letters == {"T3", "T6"}


def test_where_list_of_values(four_nations):
    letters, _ = launched(four_nations, "Leaders", where=["role=headteacher,deputy"], nations="all")
    assert letters == {"T1", "T2", "T5"}
    # The older spelling still names two columns in one --where.
    letters, _ = launched(four_nations, "Kent heads", where=["branch=Sevenoaks,role=Headteacher|Deputy"])
    assert letters == {"T1"}


def test_where_is_empty(four_nations):
    letters, _ = launched(four_nations, "No branch", where=["branch="], nations="all")
    assert letters == {"T2", "T6"}
    letters, _ = launched(four_nations, "No officials", where=["Officials="], nations="all")
    assert letters == {"T5"}


def test_where_and_nations_together(four_nations):
    letters, left_out = launched(four_nations, "English heads", where=["role=headteacher"], nations="england")
    assert letters == {"T1"}
    assert left_out["T5"] == "outside_nations" and left_out["T2"] == "not_selected"


def test_where_unknown_column_is_refused(four_nations):
    with pytest.raises(CampaignError, match=r"^--where: no column 'grade' among the members' columns"):
        create_wave(
            four_nations,
            "X",
            WaveSpec(target="mp", letter="mp-inspection", invite="invitation", where=["grade=3"]),
            SETTINGS,
        )


def test_cli_counts_members_left_out_at_launch_and_in_status(four_nations, cli):
    created = cli(
        "wave",
        "create",
        "England heads",
        "--target",
        "mp",
        "--letter",
        "mp-inspection",
        "--invite",
        "invitation",
        "--nations",
        "england",
        "--where",
        "role=headteacher,deputy",
    )
    assert created.exit_code == 0, created.output
    assert "members: role is 'headteacher' or 'deputy', in England" in created.output
    launch = cli("wave", "launch", "England heads")
    assert launch.exit_code == 0, launch.output
    assert "2 letter(s) created" in launch.output
    assert "skipped 3: outside the wave's nations (--nations)" in launch.output
    assert "skipped 1: not matching --where" in launch.output
    status = cli("wave", "status", "England heads")
    assert "left out 3: outside the wave's nations (--nations)" in status.output
    assert "left out 1: not matching --where" in status.output
    as_json = json.loads(cli("wave", "status", "England heads", "--json").stdout)
    assert as_json["left_out"] == {"outside_nations": 3, "not_selected": 1}


def test_cli_unknown_column_and_bad_nation_exit_2(four_nations, cli):
    base = ("wave", "create", "X", "--target", "mp", "--letter", "mp-inspection", "--invite", "invitation")
    result = cli(*base, "--where", "grade=3")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(
            "--where: no column 'grade' among the members' columns (see `campaign members show` for the imported ones)"
        )
    )
    result = cli(*base, "--nations", "mars")
    assert result.exit_code == 2
    assert "--nations: 'mars' is not a nation" in result.output
    assert "X" not in cli("wave", "list").output.split()


def test_fixed_wave_for_england_leaves_out_members_whose_nation_is_unknown(four_nations, tmp_path):
    extra = tmp_path / "extra.csv"
    extra.write_text(
        "Membership No,First Name,Last Name,Email,Postcode,School URN\n"
        "T7,Ann,T7,t7@members.example.org,SW1A 2AA,100001\n"
    )
    import_members(four_nations, extra)
    spec = WaveSpec(
        target="fixed",
        letter="secretary-of-state",
        invite="invitation",
        nations="england",
        to="Secretary of State <sos@example.org>",
    )
    create_wave(four_nations, "SoS", spec, SETTINGS)
    result = launch_wave(four_nations, "SoS", SETTINGS, list_skipped=True)
    details = {s["membership_no"]: s["detail"] for s in result.skipped_members}
    assert result.created == 3
    assert details["T7"] == "nation not known: the member's postcode is not resolved to a constituency"
    assert details["T5"] == "constituency in Scotland; the wave covers England"


# ---- the demo data's Official and Inspector columns --------------------------------------


def test_demo_officials_and_inspectors_are_chosen_with_where(sample):  # noqa: F811
    create_wave(sample, "Officials", replace(EMPLOYER_WAVE, where=["official=yes"]), SETTINGS)
    result = launch_wave(sample, "Officials", SETTINGS, list_skipped=True)
    # Three officials at Liverpool, two at Norfolk, one alone at Cornwall. The two members at the
    # Welsh school (one an official) are outside the letter's nations, checked first; the other
    # 51 of the 59 members are not officials.
    letters = Counter(r["target_name"] for r in iter_letters(sample, wave="Officials"))
    assert letters == {"Liverpool City Council": 3, "Norfolk County Council": 2, "Cornwall Council": 1}
    assert result.skipped == {"outside_nations": 2, "not_selected": 51}
    welsh = {s["membership_no"] for s in result.skipped_members if s["reason"] == "outside_nations"}
    assert welsh == {"M100043", "M100044"}
    create_wave(sample, "Inspectors", replace(MP_WAVE, where=["inspector=yes"]), SETTINGS)
    launch_wave(sample, "Inspectors", SETTINGS)
    assert sorted(r["membership_no"] for r in iter_letters(sample, wave="Inspectors")) == [
        "M100002",
        "M100009",
        "M100025",
    ]
