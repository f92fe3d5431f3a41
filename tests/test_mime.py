"""The fast message assembly reads back, with the standard library, as the message we meant."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.utils import formataddr

import pytest

from engine.mail.mime import alternative
from engine.members.validation import header_problems

NAMES = ["Aisha Khan", "Nguyễn Thi Lan", "Siân Owen", "O'Brien, Pat", "Łukasz Kowalski"]


@pytest.mark.parametrize("name", NAMES)
def test_headers_and_both_parts_parse_back(name):
    subject = f"Your letter to {name} MP is ready — about inspection and well-being, " + "long " * 20
    headers = [
        ("From", "Campaigns Team <campaigns@union.example>"),
        ("To", formataddr((name, "member@members.example.org"))),
        ("Subject", subject),
        ("Message-ID", "<ABCDE-FGHJK.invitation@union.example>"),
    ]
    text = f"Dear {name},\n\n" + "A long line of text that goes on. " * 40 + "\n"
    html = f"<p>Dear {name},</p>" + "<p>x &amp; y</p>" * 200
    message = message_from_bytes(alternative(headers, text, html), policy=policy.default)
    assert message["To"].addresses[0].display_name == name
    assert message["To"].addresses[0].addr_spec == "member@members.example.org"
    assert str(message["Subject"]) == subject
    assert message["Message-ID"] == "<ABCDE-FGHJK.invitation@union.example>"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert message.get_body(("html",)).get_content().replace("\r\n", "\n") == html
    assert message.defects == []


def test_every_line_is_short_and_ends_in_crlf():
    data = alternative([("Subject", "Hi")], "x" * 5000, "<p>" + "y" * 5000 + "</p>")
    lines = data.split(b"\r\n")
    assert b"\n" not in b"".join(lines)
    assert max(len(line) for line in lines) <= 998


def test_a_header_cannot_smuggle_another():
    with pytest.raises(ValueError):
        alternative([("Subject", "Hello\r\nBcc: victim@example.org")], "x", "y")


@pytest.mark.parametrize(
    "value, problem",
    [
        ("Hi\x00", "a control character (U+0000)"),
        ("Hi\x1b[2J", "a control character (U+001B)"),
        ("Siân\u2028Bcc: victim@example.org", "a line break (U+2028)"),
        ("Siân\x85Bcc: victim@example.org", "a line break (U+0085)"),
    ],
)
def test_a_header_cannot_hold_a_control_character_or_any_line_break(value, problem):
    with pytest.raises(ValueError) as refused:
        alternative([("Subject", value)], "x", "y")
    assert str(refused.value) == f"Subject: a header cannot hold {problem}"


def test_a_tab_is_still_allowed_in_a_header():
    message = message_from_bytes(alternative([("Subject", "A\tB")], "x", "y"), policy=policy.default)
    assert str(message["Subject"]) == "A\tB"


def test_header_problems_names_each_field_and_lets_tabs_and_no_break_spaces_through():
    values = {"first_name": "Siân\u00a0Owen", "town": "Cardiff\tBay", "role": None, "last_name": "O\x00wen"}
    assert header_problems(values) == [("last_name", "contains a control character (U+0000)")]
    assert (
        header_problems({"postal_address": "1 Street\r\nCardiff\u2028CF10 1EP"}, multiline=["postal_address"])
        == []
    )
