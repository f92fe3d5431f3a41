"""What the receiving mail server found of a message's sender: SPF, DKIM and DMARC verdicts.

Any `From:` can be forged; the server that accepted the message for the
organising mailbox records in Authentication-Results (RFC 8601) whether the
sender's domain vouched for it. Those headers can be forged too, further down
the message, so only the verdicts of our own server are read where its
authserv-id is configured. A failure is acted on (the message never matches
automatically); a pass only confirms what the other evidence says.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

import authres

_METHODS = ("spf", "dkim", "dmarc")
# Results that say the domain did not vouch for the message (RFC 8601 section 2.7).
_FAILED = {"fail", "permerror"}


@dataclass(frozen=True)
class SenderAuthentication:
    summary: str | None = None  # e.g. "mx.union.example: spf=pass dkim=fail dmarc=fail"
    dmarc_failed: bool = False

    @property
    def failure(self) -> str | None:
        """Why a person should not trust the sender, or None."""
        if self.dmarc_failed:
            return f"the sender's domain failed DMARC ({self.summary})"
        return None


def read_authentication(message: Message, authserv_id: str | None = None) -> SenderAuthentication:
    """The SPF/DKIM/DMARC verdicts on `message`, from the servers we trust to have written them."""
    parts: list[str] = []
    dmarc_failed = False
    try:
        values = message.get_all("Authentication-Results") or []
    except Exception:  # a header too broken for the parser: as good as none
        values = []
    for value in values:
        text = " ".join(str(value).replace("\0", "").split())
        try:
            header = authres.AuthenticationResultsHeader.parse_value(text)
        except Exception:  # authres raises its own errors and, on odd input, others
            continue
        server = str(header.authserv_id or "")
        if authserv_id and server.lower() != authserv_id.lower():
            continue
        verdicts = []
        for result in header.results:
            method = str(result.method or "").lower()
            if method not in _METHODS:
                continue
            outcome = str(result.result or "").lower()
            verdicts.append(f"{method}={outcome}")
            if method == "dmarc" and outcome in _FAILED:
                dmarc_failed = True
        if verdicts:
            parts.append(f"{server[:100]}: {' '.join(verdicts)}")
    summary = "; ".join(parts)[:500] or None
    return SenderAuthentication(summary=summary, dmarc_failed=dmarc_failed)
