"""Checking email addresses with email-validator, fast enough for 450,000 members.

email-validator spends most of its time on the domain, and members share a
few thousand domains at most; so each domain is validated once (as
`postmaster@domain`) and remembered. A plain ASCII dot-atom local part is
then all the checking the rest needs; anything else (quotes, Unicode, odd
dots) goes through email-validator whole.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["EmailNotValidError", "normalise_email"]

_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@lru_cache(maxsize=8192)
def _domain(domain: str) -> str:
    return validate_email(f"postmaster@{domain}", check_deliverability=False).ascii_domain


def normalise_email(address: str) -> str:
    """The address as email-validator normalises it; raises EmailNotValidError if it is not one."""
    local, at, domain = address.rpartition("@")
    if at and len(local) <= 64 and len(address) <= 254 and _DOT_ATOM.fullmatch(local) and domain.isascii():
        try:
            ascii_domain = _domain(domain)
        except EmailNotValidError:
            pass  # let the full check below word the error for the whole address
        else:
            return f"{local}@{ascii_domain}"
    return validate_email(address, check_deliverability=False).normalized
