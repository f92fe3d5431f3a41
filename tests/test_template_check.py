"""`campaign template check`."""

from __future__ import annotations

import json

from conftest import DATA, ROOT

from engine.letters.template_check import check_template_file
from engine.lookup.schools import import_schools
from engine.members.importer import import_members


def test_every_bundled_template_checks_clean():
    paths = sorted((ROOT / "templates").glob("*/*.txt")) + sorted((ROOT / "templates").glob("*/*.html"))
    assert len(paths) == 21  # 12 emails (6 text, 6 HTML), 8 letters and the letter layout
    for path in paths:
        report = check_template_file(path)
        assert report.problems == [], path


def test_members_lacking_a_field_are_reported(engine, tmp_path):
    import_members(engine, DATA / "members.csv", skip_invalid=True, rejects_path=tmp_path / "r.csv")
    import_schools(engine, DATA / "edubasealldata.csv")
    report = check_template_file(ROOT / "templates/letters/employer-wellbeing.txt", engine)
    # Scottish, NI and other unknown URNs (11), and the 3 members with no school.
    assert report.lacking["member.school"]["members"] == 14
    assert "member.name" not in report.lacking


def test_cli_lists_fields_and_fails_on_unknown_ones(cli, tmp_path):
    bad = tmp_path / "letters" / "bad.txt"
    bad.parent.mkdir()
    bad.write_text(
        "{% block subject %}Hello{% endblock %}\n{% block body %}\nDear {{ target.salutaton }},\n{% endblock %}\n"
    )
    result = cli("template", "check", str(bad))
    assert result.exit_code == 2
    assert "line   3  target.salutaton" in result.stdout
    assert (
        f"{bad}:3: unknown field target.salutaton (target has: address, constituency, email, kind, name, party, salutation)"
        in result.stderr
    )
    good = cli("template", "check", str(ROOT / "templates/letters/mp-inspection.txt"), "--json")
    assert good.exit_code == 0
    fields = [f["field"] for f in json.loads(good.stdout)["fields"]]
    assert fields[:2] == ["target.constituency", "target.salutation"]
