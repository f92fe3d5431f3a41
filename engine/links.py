"""Letter references and members' personal links.

A link's token is an HMAC of the letter's reference under the campaign
secret: unguessable without the secret, never stored (only its SHA-256 is,
for lookup), and the same every time a message is rebuilt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Crockford's base32 without I, L, O, U: nothing to misread on paper or a phone.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_reference() -> str:
    """A short unguessable letter reference, e.g. 'K7M2Q-9XH4T' (50 random bits)."""
    bits = secrets.randbits(50)
    chars = "".join(_ALPHABET[(bits >> shift) & 31] for shift in range(45, -5, -5))
    return f"{chars[:5]}-{chars[5:]}"


def link_token(secret: str, reference: str, purpose: str = "letter") -> str:
    """The token in a member's personal link (132 bits, URL-safe)."""
    digest = hmac.digest(secret.encode(), f"{purpose}:{reference}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest).decode()[:22]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def letter_link(base_url: str, token: str) -> str:
    return f"{base_url}/l/{token}"


def unsubscribe_link(base_url: str, secret: str, reference: str) -> str:
    """One-click unsubscribe: the reference says whose, the token proves the link is ours."""
    return f"{base_url}/unsubscribe/{reference}/{link_token(secret, reference, 'unsubscribe')}"


def csrf_token(secret: str, reference: str) -> str:
    """The hidden form field that proves a form came from this letter's own page."""
    return link_token(secret, reference, "form")


def check_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


def answer_link(base_url: str, secret: str, reference: str, answer: str) -> str:
    """A one-click answer to "Has your MP replied?" for one letter."""
    return (
        f"{base_url}/answer/{reference}/{link_token(secret, reference, 'answer')}/{answer.replace('_', '-')}"
    )
