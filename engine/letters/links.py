"""Letter references and members' personal links.

Every link a member gets (their letter's page, unsubscribe, the MP
questionnaire's answers, and the page's form token) is an HMAC, under the
campaign secret, of a random nonce stored with the letter, never of the
reference: references are printed on letters that MPs and employers read,
so anything derived from them alone could be worked out by a reader who ever
learnt the secret. A token is never stored (only its SHA-256 is, for lookup)
and is the same every time a message is rebuilt from the letter.
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


def new_link_nonce() -> str:
    """The random value a letter's links are made from (128 bits, 22 characters)."""
    return secrets.token_urlsafe(16)


def link_token(secret: str, nonce: str, purpose: str = "letter") -> str:
    """The token in one of a letter's links (132 bits, URL-safe)."""
    if not nonce:
        # A letter without its nonce would share its links with every other such letter.
        raise ValueError("a letter has no link nonce")
    digest = hmac.digest(secret.encode(), f"{purpose}:{nonce}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest).decode()[:22]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def letter_link(base_url: str, token: str) -> str:
    return f"{base_url}/l/{token}"


def unsubscribe_link(base_url: str, secret: str, reference: str, nonce: str) -> str:
    """One-click unsubscribe: the reference says whose, the token proves the link is ours."""
    return f"{base_url}/unsubscribe/{reference}/{link_token(secret, nonce, 'unsubscribe')}"


def csrf_token(secret: str, nonce: str) -> str:
    """The hidden form field that proves a form came from this letter's own page."""
    return link_token(secret, nonce, "form")


def check_token(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


def answer_link(base_url: str, secret: str, reference: str, nonce: str, answer: str) -> str:
    """A one-click answer to "Has your MP replied?" for one letter."""
    token = link_token(secret, nonce, "answer")
    return f"{base_url}/answer/{reference}/{token}/{answer.replace('_', '-')}"


def new_message_id(reference: str, kind: str, domain: str) -> str:
    """A Message-ID for one outgoing message: names its letter, and holds a random part.

    Bounces, complaints and replies that quote it are trusted to be about that
    message. The letter's reference is printed on every letter, so without the
    random part anyone who has seen a letter could forge a bounce or a complaint
    about it. Hex keeps it the same when a mail server lowercases a VERP address.
    """
    return f"<{reference}.{kind.replace('_', '-')}.{secrets.token_hex(8)}@{domain}>"


def verp_tag(message_id: str) -> str:
    """The part of a Message-ID carried in its VERP bounce address (bounces+TAG@…)."""
    return message_id.strip("<>").rpartition("@")[0]
