"""The fast email check agrees with email-validator on every kind of address."""

from __future__ import annotations

import pytest
from email_validator import validate_email

from engine.members.emails import EmailNotValidError, normalise_email

ADDRESSES = [
    "jane.smith@members.example.org",
    "Jane.Smith@Members.EXAMPLE.org",
    "o'brien+union@example.co.uk",
    "a@example.com",
    "x" * 64 + "@example.org",
    "x" * 65 + "@example.org",
    "jane..smith@example.org",
    ".jane@example.org",
    "jane.@example.org",
    '"jane smith"@example.org',
    "siân@example.org",
    "jane@bücher.example",
    "jane@example",
    "jane@localhost",
    "jane@foo.test",
    "jane@-example.org",
    "jane@example..org",
    "jane@",
    "@example.org",
    "not-an-address",
    "jane smith@example.org",
    "jane@example.org" + "a" * 250,
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_same_verdict_and_normal_form_as_email_validator(address):
    try:
        expected = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        with pytest.raises(EmailNotValidError) as caught:
            normalise_email(address)
        assert str(caught.value) == str(exc)
    else:
        assert normalise_email(address) == expected
