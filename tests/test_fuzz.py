"""Fuzzing what comes from outside: member and GIAS files, incoming mail, templates.

Each property holds for any input hypothesis makes: the step succeeds, or it refuses with a
CampaignError of one line naming the file (and row); a refusal writes nothing; nothing raises
anything else. Mail is never refused: every message is stored once, whatever its shape.
The big cases (a 30 MB message, 200-deep nesting, a bounce listing 10,000 recipients) check
time and memory too. FUZZ_FULL=1 (or FAULTS_FULL=1) runs many more examples.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import ROOT, TEST_SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from engine.errors import CampaignError, RowErrors
from engine.inbox.ingest import Ingester, IngestResult
from engine.letters.template_check import check_template_file
from engine.lookup.schools import import_schools
from engine.members.importer import import_members
from engine.settings import Settings
from engine.store.models import event_table, inbound_table, member_table, school_table

FULL = os.environ.get("FUZZ_FULL") == "1" or os.environ.get("FAULTS_FULL") == "1"
# Small enough that the file runs in about a minute on two shared cores, on both databases.
EXAMPLES = 400 if FULL else 25
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SETTINGS = Settings.from_env({"CAMPAIGN_SECRET": TEST_SECRET}, templates_dir=str(ROOT / "templates"))

# What a hostile or careless file or message may hold: line breaks of every kind, NUL and other
# controls, formulas, quotes and commas, markup, right-to-left marks, astral characters.
NASTY = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\x1b",
    "\x85",
    "\u2028",
    "\ufeff",
    "\u202e",
    '"',
    ",",
    ";",
    "'",
    '=HYPERLINK("http://x.example")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "-2+3",
    "\t",
    "<script>alert(1)</script>",
    "Bcc: all@example.org",
    "{{ member.first_name }}",
    "é",
    "😀",
    "x" * 250,
    "9" * 45,  # longer than a membership number or URN column holds
]
nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=12)), max_size=5).map("".join)


def counts(engine, *tables) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables)


def one_line_naming(exc: CampaignError, path: Path) -> None:
    """A refusal a person can read: one line, naming the file; each row's problem names its line."""
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert str(path) in text, text
    for problem in getattr(exc, "problems", []):
        assert "\n" not in problem and "\r" not in problem, problem
        assert problem.startswith(f"{path}:"), problem


# -- members CSV -----------------------------------------------------------------------

GOOD_MEMBER = {
    "membership_no": "M{n:06d}",
    "first_name": "Sam",
    "last_name": "Reid",
    "email": "sam{n}@members.example.org",
    "postcode": "SW1A 1AA",
    "school_urn": "100001",
    "address_line1": "1 Road",
    "town": "Town",
    "role": "Teacher",
    "branch": "Branch",
    "region": "Region",
}
HEADERS = list(GOOD_MEMBER)


@st.composite
def member_files(draw) -> tuple[bytes, str]:
    """A members file: mostly good rows, some cells replaced by hostile text, sometimes a header
    changed or a row cut short, in UTF-8 (with or without BOM) or Windows-1252."""
    headers = list(HEADERS)
    if draw(st.booleans()):
        headers.append(draw(nasty_text))  # an extra column: kept as a custom field
    if draw(st.integers(0, 9)) == 0:
        headers[draw(st.integers(0, len(headers) - 1))] = draw(nasty_text)
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        base = draw(st.integers(0, 20))  # repeats make duplicate membership numbers
        cells = [GOOD_MEMBER.get(h, "").format(n=base) for h in headers]
        for _ in range(draw(st.integers(0, 2))):
            cells[draw(st.integers(0, len(cells) - 1))] = draw(nasty_text)
        if draw(st.integers(0, 9)) == 0:
            cells = cells[: draw(st.integers(0, len(cells)))]
        rows.append(cells)
    lines = [",".join(_quoted(c) for c in row) for row in [headers, *rows]]
    text = "\r\n".join(lines) + draw(st.sampled_from(["", "\r\n", "\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]))
    return text.encode(encoding, "replace"), encoding


def _quoted(cell: str) -> str:
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


@given(file=member_files(), skip=st.booleans())
@FUZZ
def test_members_import_takes_or_refuses_a_whole_file_in_one_line(engine, tmp_path, file, skip):
    data, _ = file
    path = tmp_path / "members.csv"
    path.write_bytes(data)
    rejects = tmp_path / "members.rejects.csv"
    rejects.unlink(missing_ok=True)
    before = counts(engine, member_table, event_table)
    try:
        result = import_members(engine, path, skip_invalid=skip, rejects_path=rejects)
    except CampaignError as exc:
        one_line_naming(exc, path)
        assert counts(engine, member_table, event_table) == before
        assert not rejects.exists()
        return
    assert counts(engine, member_table)[0] == before[0] + result.created
    assert rejects.exists() == bool(result.rejected)
    # What went in can never reach a mail header with a line break, or PostgreSQL with a NUL.
    with engine.connect() as conn:
        names = conn.execute(select(member_table.c.first_name, member_table.c.last_name)).all()
    assert not [n for row in names for n in row if n and ("\n" in n or "\r" in n or "\x00" in n)]


@given(data=st.binary(max_size=400))
@FUZZ
def test_members_import_of_any_bytes_never_raises_anything_else(engine, tmp_path, data):
    path = tmp_path / "members.csv"
    path.write_bytes(data)
    before = counts(engine, member_table, event_table)
    try:
        import_members(engine, path, skip_invalid=True, rejects_path=tmp_path / "rejects.csv")
    except CampaignError as exc:
        one_line_naming(exc, path)
        assert counts(engine, member_table, event_table) == before


# -- GIAS schools ----------------------------------------------------------------------

GIAS_HEADER = [
    "URN",
    "EstablishmentName",
    "TypeOfEstablishment (code)",
    "TypeOfEstablishment (name)",
    "EstablishmentStatus (name)",
    "LA (code)",
    "LA (name)",
    "Trusts (code)",
    "Trusts (name)",
    "Postcode",
    "ParliamentaryConstituency (code)",
]


@st.composite
def gias_files(draw) -> bytes:
    rows = []
    for n in range(draw(st.integers(0, 6))):
        cells = [
            str(100000 + draw(st.integers(0, 8))),
            f"School {n}",
            str(draw(st.sampled_from([1, 2, 6, 8, 28, 99]))),
            "Community school",
            draw(st.sampled_from(["Open", "Closed", "open"])),
            "886",
            "Kent",
            "",
            draw(st.sampled_from(["", "Oak Trust"])),
            "BR8 7RD",
            "E14001465",
        ]
        for _ in range(draw(st.integers(0, 2))):
            cells[draw(st.integers(0, len(cells) - 1))] = draw(nasty_text)
        rows.append(cells)
    text = "\r\n".join(",".join(_quoted(c) for c in row) for row in [GIAS_HEADER, *rows]) + "\r\n"
    return text.encode(draw(st.sampled_from(["cp1252", "utf-8"])), "replace")


@given(data=gias_files())
@FUZZ
def test_schools_import_replaces_the_extract_whole_or_keeps_the_old_one(engine, tmp_path, data):
    path = tmp_path / "edubasealldata.csv"
    path.write_bytes(data)
    with engine.connect() as conn:
        old = sorted(conn.execute(select(school_table.c.urn)).scalars())
    events = counts(engine, event_table)
    try:
        result = import_schools(engine, path)
    except CampaignError as exc:
        one_line_naming(exc, path)
        with engine.connect() as conn:
            assert sorted(conn.execute(select(school_table.c.urn)).scalars()) == old
        assert counts(engine, event_table) == events
        return
    assert counts(engine, school_table) == (result.schools,)


# -- incoming mail ---------------------------------------------------------------------

CHARSETS = [
    "utf-8",
    "us-ascii",
    "iso-8859-1",
    "windows-1252",
    "utf-7",
    "iso-2022-jp",
    "x-bogus",
    "",
    "utf-8\x00",
]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "bogus"]
header_values = st.one_of(
    nasty_text,
    st.sampled_from(
        [
            "=?utf-8?q?caf=C3=A9?=",
            "=?x-bogus?b?////?=",
            "=?utf-8?b?not base64?=",
            "a@b\r\nBcc: x@y.example",
            "<not-an-id",
            "Organiser <organising@union.example>",
            "\x00",
        ]
    ),
)


@st.composite
def mime_parts(draw, depth: int = 0) -> bytes:
    """One MIME part as bytes: a leaf of some type, charset and encoding, or a multipart of
    more parts, with a boundary that is sometimes not the one used."""
    kind = draw(
        st.sampled_from(["text/plain", "text/html", "application/pdf", "message/rfc822", "multipart"])
    )
    if kind == "multipart" and depth < 4:
        boundary = draw(st.sampled_from(["b1", "b2", "=_x", "a b", ""]))
        used = boundary if draw(st.integers(0, 4)) else "other"
        children = draw(st.lists(mime_parts(depth + 1), max_size=3))
        body = b"".join(b"--" + used.encode() + b"\r\n" + c + b"\r\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + used.encode() + b"--\r\n"
        sub = draw(
            st.sampled_from(["mixed", "alternative", "report; report-type=delivery-status", "related"])
        )
        return f'Content-Type: multipart/{sub}; boundary="{boundary}"\r\n\r\n'.encode() + body
    if kind == "message/rfc822":
        return b"Content-Type: message/rfc822\r\n\r\n" + draw(messages(depth + 1))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    body = draw(st.one_of(st.binary(max_size=200), nasty_text.map(lambda t: t.encode("utf-8", "replace"))))
    disposition = draw(st.sampled_from(["", "attachment", 'attachment; filename="../../x.pdf"']))
    head = f'Content-Type: {kind}; charset="{charset}"\r\nContent-Transfer-Encoding: {encoding}\r\n'
    if disposition:
        head += f"Content-Disposition: {disposition}\r\n"
    return head.encode("utf-8", "replace") + b"\r\n" + body


@st.composite
def messages(draw, depth: int = 0) -> bytes:
    headers = []
    for name in draw(
        st.lists(
            st.sampled_from(["From", "To", "Subject", "Message-ID", "Date", "In-Reply-To", "References",
                             "Return-Path", "Auto-Submitted", "Authentication-Results", "X-Failed-Recipients"]),
            max_size=8,
        )
    ):  # fmt: skip
        headers.append(f"{name}: {draw(header_values)}".encode("utf-8", "replace"))
    body = draw(mime_parts(depth)) if depth < 4 else b"\r\nhello\r\n"
    return b"\r\n".join(headers) + (b"\r\n" if headers else b"") + b"MIME-Version: 1.0\r\n" + body


def ingester(engine) -> Ingester:
    return Ingester(engine, SETTINGS)


def stored(engine, inbound_id: int) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(inbound_table).where(inbound_table.c.id == inbound_id)).one()._mapping
        )


def assert_stored_once(engine, data: bytes, inbound_id: int | None, before: int) -> None:
    after = counts(engine, inbound_table)[0]
    if inbound_id is None:  # the same bytes came up twice: recorded once
        assert after == before
        return
    assert after == before + 1
    row = stored(engine, inbound_id)
    assert bytes(row["raw"]) == data  # kept whole, for staff to look at
    for name in ("from_addr", "subject", "text", "author_name", "author_addr", "problem", "triage"):
        assert "\x00" not in (row[name] or ""), name


@given(data=messages())
@FUZZ
def test_any_mime_tree_is_stored_once_and_never_stops_the_run(engine, data):
    before = counts(engine, inbound_table)[0]
    result = IngestResult()
    inbound_id = ingester(engine).record(data, "fuzz", result)
    assert_stored_once(engine, data, inbound_id, before)
    assert result.not_stored == 0


@given(data=st.binary(max_size=2000))
@FUZZ
def test_any_bytes_at_all_are_stored_once(engine, data):
    before = counts(engine, inbound_table)[0]
    inbound_id = ingester(engine).record(data, "fuzz")
    assert_stored_once(engine, data, inbound_id, before)


def measured(call):
    """(what `call` returned, seconds, peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        value = call()
    finally:
        seconds = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return value, seconds, peak


HEAD = b"From: Sam <sam@members.example.org>\r\nTo: organising@union.example\r\nMIME-Version: 1.0\r\n"


def test_a_30_mb_message_is_stored_in_bounded_time_and_memory(engine):
    line = b"All work and no play makes a dull inspection report, said the governors again.\r\n"
    data = HEAD + b"Subject: big\r\nContent-Type: text/plain\r\n\r\n" + line * (30_000_000 // len(line))
    inbound_id, seconds, peak = measured(lambda: ingester(engine).record(data, "big"))
    row = stored(engine, inbound_id)
    assert row["size"] == len(data) > 30_000_000
    assert 0 < len(row["text"]) <= 100_000  # what staff read is bounded; the raw message is whole
    # Parsing holds the message as bytes, as text and as lines: 10x its size is the stated bound.
    # Before the text read was bounded, matching went through all 30 MB: 78 s traced.
    assert peak < 10 * len(data), f"{peak / 1e6:.0f} MB"
    assert seconds < 60, seconds


def test_html_that_never_closes_its_tags_is_read_in_linear_time(engine):
    """`<script ` or `<` repeated, with no closing tag or `>`: the patterns that stripped tags
    took minutes on a megabyte of either."""
    for filler in (b"<script " * 150_000, b"<" * 1_000_000, b"<style>" * 150_000):
        data = HEAD + b"Subject: Re: your letter\r\nContent-Type: text/html\r\n\r\n<p>We agree.</p>" + filler
        start = time.monotonic()
        inbound_id = ingester(engine).record(data, "html")
        assert time.monotonic() - start < 20
        assert stored(engine, inbound_id)["text"].startswith("We agree.")


def nested(depth: int) -> bytes:
    data = HEAD + b"Subject: Re: your letter\r\n"
    for i in range(depth):
        data += b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
    data += b"Content-Type: text/plain\r\n\r\nThe innermost words.\r\n"
    for i in reversed(range(depth)):
        data += b"--b%d--\r\n" % i
    return data


def test_200_deep_multipart_nesting_is_read_and_deeper_still_is_stored(engine):
    data = nested(200)
    inbound_id, seconds, peak = measured(lambda: ingester(engine).record(data, "deep"))
    row = stored(engine, inbound_id)
    assert row["problem"] is None and "The innermost words." in row["text"]
    assert peak < 50_000_000, f"{peak / 1e6:.0f} MB"
    assert seconds < 30, seconds
    # Past what the parser can recurse into, the message is kept raw with the reason.
    result = IngestResult()
    deeper = ingester(engine).record(nested(2000), "deeper", result)
    assert (
        stored(engine, deeper)["problem"] == "cannot parse: RecursionError: maximum recursion depth exceeded"
    )
    assert result.problems == [
        f"message {deeper} (deeper): cannot parse: RecursionError: maximum recursion depth exceeded"
    ]


def test_a_bounce_listing_10000_recipients_is_read_in_bounded_time_and_memory(engine):
    listed = b"".join(
        b"Final-Recipient: rfc822; user%d@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" % i
        for i in range(10_000)
    )
    data = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\nTo: bounces@union.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=rr\r\n\r\n"
        b"--rr\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--rr\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        + listed
        + b"--rr--\r\n"
    )
    start = time.monotonic()
    result = IngestResult()
    inbound_id = ingester(engine).record(data, "bounce", result)
    assert time.monotonic() - start < 60
    assert stored(engine, inbound_id)["kind"] == "bounce"
    # None of them is ours: nothing is marked, nobody suppressed.
    assert (result.letters_bounced, result.addresses_suppressed) == (0, 0)


# -- templates -------------------------------------------------------------------------

TEMPLATE_PIECES = [
    "{% block subject %}",
    "{% block body %}",
    "{% endblock %}",
    "{{ member.first_name }}",
    "{{ member.custom.years }}",
    "{{ target.name | upper }}",
    "{{ nobody.here }}",
    "{% if member.school %}",
    "{% endif %}",
    "{% for x in member %}",
    "{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% include '../../etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "(" * 50,
    "\n",
    "\x00",
    "Dear MP,",
]
template_sources = st.lists(
    st.one_of(st.sampled_from(TEMPLATE_PIECES), st.text(max_size=8)), max_size=12
).map("".join)


@given(source=template_sources, suffix=st.sampled_from([".txt", ".html"]), raw=st.booleans())
@FUZZ
def test_template_check_reports_or_refuses_in_one_line(engine, tmp_path, source, suffix, raw):
    path = tmp_path / "letters" / f"fuzz{suffix}"
    path.parent.mkdir(exist_ok=True)
    data = source.encode("utf-8")
    path.write_bytes(data if not raw else data + b"\xff\xfe")
    try:
        report = check_template_file(path, engine)
    except CampaignError as exc:
        one_line_naming(exc, path)
        return
    assert report.file == str(path)
    for problem in report.problems:
        assert problem.startswith(f"{path}:") and "\n" not in problem, problem


def test_a_template_naming_another_file_is_refused_when_checked(engine, tmp_path):
    """The sandbox has no loader: `include` or `extends` would only fail at launch, and a
    template must never read a file of its choosing (`../../etc/passwd`) into a letter."""
    for line, tag in ((2, "{% include '../../etc/passwd' %}"), (3, "{% extends '/etc/passwd' %}")):
        path = tmp_path / "letter.txt"
        path.write_text(
            "\n" * (line - 1) + tag + "{% block subject %}Hi{% endblock %}{% block body %}{% endblock %}"
        )
        report = check_template_file(path, engine)
        assert f"{path}:{line}: a template cannot include, extend or import another file" in report.problems


# -- what fuzzing found ----------------------------------------------------------------


def test_rows_the_fuzzer_broke_the_imports_with_are_refused_by_line(engine, tmp_path):
    """Each stopped an import with a database error (or a ValueError) instead of naming its row."""
    gias = tmp_path / "edubasealldata.csv"
    rows = ["100001,,1", "100002,School,\u00b2", "\u00b2,School,1", "1234567890123456789012,School,1"]
    gias.write_bytes(
        (
            ",".join(GIAS_HEADER) + "\r\n" + "".join(f"{r},x,Open,886,Kent,,,BR8 7RD,E1\r\n" for r in rows)
        ).encode()
    )
    with pytest.raises(RowErrors) as refused:
        import_schools(engine, gias, encoding="utf-8")
    assert refused.value.problems == [
        f"{gias}:2: EstablishmentName: missing",
        f"{gias}:3: TypeOfEstablishment (code): '\u00b2' is not a number",
        f"{gias}:4: URN: '\u00b2' is not a URN",
        f"{gias}:5: URN: '1234567890123456789012' is not a URN",
    ]
    assert counts(engine, school_table) == (0,)
    members = tmp_path / "members.csv"
    members.write_text(
        "membership_no,first_name,last_name,email,postcode,school_urn\n"
        f"M{'9' * 45},Sam,Reid,sam@members.example.org,SW1A 1AA,100001\n"
        f"M1,Ann,Lee,ann@members.example.org,SW1A 1AA,{'1' * 25}\n"
    )
    with pytest.raises(RowErrors) as refused:
        import_members(engine, members)
    assert refused.value.problems == [
        f"{members}:2: membership_no: longer than 40 characters",
        f"{members}:3: school_urn: longer than 20 characters",
    ]
    assert counts(engine, member_table) == (0,)
