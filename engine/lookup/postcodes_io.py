"""The postcodes.io client: bulk postcode lookups and terminated postcodes.

Only this module knows postcodes.io's URLs and payload shapes; it hands back
plain `PostcodeAnswer`s that the resolver caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import CampaignError
from engine.lookup.http import JsonClient

BATCH = 100  # the most postcodes.io accepts in one bulk request
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class PostcodeAnswer:
    postcode: str
    status: str  # found | bad_postcode | not_found | terminated
    constituency_code: str | None = None
    constituency_name: str | None = None
    country: str | None = None
    detail: str | None = None


def answer_from_result(postcode: str, result: dict[str, Any]) -> PostcodeAnswer:
    """Read the constituency from one postcodes.io result object (2024 boundaries)."""
    codes = result.get("codes") or {}
    # Older servers and old answers hold 2010 boundaries in the plain field and
    # the 2024 ones in the _2024 field; newer ones hold 2024 in both.
    code = codes.get("parliamentary_constituency_2024") or codes.get("parliamentary_constituency")
    name = result.get("parliamentary_constituency_2024") or result.get("parliamentary_constituency")
    detail = None
    if not code or code.endswith("99999999"):
        code, name = None, None
        detail = "not in any UK Parliament constituency"
    return PostcodeAnswer(postcode, "found", code, name, result.get("country"), detail)


class PostcodesIO:
    def __init__(self, client: JsonClient):
        self.client = client

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def lookup(self, postcodes: list[str]) -> dict[str, PostcodeAnswer | None]:
        """Answers keyed by the postcodes asked; None where the service knows nothing of it.

        At most BATCH postcodes per call. A postcode missing from the reply is
        left out of the result rather than guessed.
        """
        if len(postcodes) > BATCH:
            raise ValueError(f"at most {BATCH} postcodes per bulk lookup")
        status, body = self.client.call("POST", "/postcodes", json={"postcodes": postcodes})
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("result"), list):
            raise CampaignError(f"postcodes.io: bulk lookup failed: HTTP {status}: {_error(body)}")
        asked = set(postcodes)
        answers: dict[str, PostcodeAnswer | None] = {}
        # Match on `query`, never on position: the service drops some entries.
        for item in body["result"]:
            if not isinstance(item, dict) or item.get("query") not in asked:
                continue
            result = item.get("result")
            query = item["query"]
            answers[query] = answer_from_result(query, result) if isinstance(result, dict) else None
        return answers

    def explain_unknown(self, postcode: str) -> PostcodeAnswer:
        """Why a postcode is unknown: retired (and when), not a postcode, or not found."""
        status, body = self.client.call("GET", f"/terminated_postcodes/{postcode.replace(' ', '')}")
        if status == 200 and isinstance(body, dict) and isinstance(body.get("result"), dict):
            result = body["result"]
            year, month = result.get("year_terminated"), result.get("month_terminated")
            when = str(year)
            if isinstance(month, int) and 1 <= month <= 12:
                when = f"{_MONTHS[month - 1]} {year}"
            return PostcodeAnswer(postcode, "terminated", detail=f"terminated in {when}")
        if status == 404:
            error = _error(body)
            if error.lower() == "invalid postcode":
                return PostcodeAnswer(postcode, "bad_postcode", detail="postcodes.io: invalid postcode")
            return PostcodeAnswer(postcode, "not_found", detail="postcode not found")
        raise CampaignError(f"postcodes.io: terminated lookup failed: HTTP {status}: {_error(body)}")


def _error(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"].strip()
    return "unexpected reply"
