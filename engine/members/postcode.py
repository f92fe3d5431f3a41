"""UK postcode shape: checking and tidying, without asking any service."""

from __future__ import annotations

import re

# Outward code forms A9, A99, AA9, AA99, A9A, AA9A with the letters Royal Mail
# allows in each position; inward code 9AA without C I K M O V.
_OUTWARD = (
    r"(?:[A-PR-UWYZ][0-9][0-9]?"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][0-9]?"
    r"|[A-PR-UWYZ][0-9][A-HJKPSTUW]"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY])"
)
_INWARD = r"[0-9][ABD-HJLNP-UW-Z]{2}"
_SHAPE = re.compile(rf"(?:{_OUTWARD}|GIR)(?:{_INWARD})")
_SPACES = re.compile(r"\s+")
# The form every export should already hold ('SW1A 0AA'): one match and nothing to tidy.
_TIDY = re.compile(rf"(?:{_OUTWARD}|GIR) (?:{_INWARD})")


def normalise_postcode(raw: str) -> str | None:
    """'sw1a0aa' → 'SW1A 0AA'; None when the text is not shaped like a UK postcode."""
    if _TIDY.fullmatch(raw):
        return raw
    compact = _SPACES.sub("", raw).upper()
    if not _SHAPE.fullmatch(compact):
        return None
    return f"{compact[:-3]} {compact[-3:]}"
