"""The UK Parliament Members API client: constituency name → sitting MP and contact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import CampaignError
from engine.lookup.http import JsonClient

COMMONS_ADDRESS = "House of Commons\nLondon\nSW1A 0AA"


@dataclass(frozen=True)
class SeatAnswer:
    constituency_name: str
    parliament_constituency_id: int
    vacant: bool
    member_id: int | None = None
    name: str | None = None
    full_title: str | None = None
    address_as: str | None = None
    party: str | None = None


class MembersAPI:
    def __init__(self, client: JsonClient):
        self.client = client

    def seat(self, constituency_name: str) -> SeatAnswer | None:
        """The current seat of that exact name, or None when Parliament has no such seat."""
        status, body = self.client.call(
            "GET",
            "/api/Location/Constituency/Search",
            params={"searchText": constituency_name, "skip": 0, "take": 20},
        )
        if status != 200 or not isinstance(body, dict):
            raise CampaignError(f"Members API: constituency search failed: HTTP {status}")
        wanted = constituency_name.casefold()
        # The search is a "contains" match, and abolished seats share names with new ones.
        for item in body.get("items") or []:
            value = (item or {}).get("value") or {}
            if (value.get("name") or "").casefold() != wanted or value.get("endDate") is not None:
                continue
            member = (((value.get("currentRepresentation") or {}).get("member")) or {}).get("value")
            if not member:
                return SeatAnswer(value["name"], value["id"], vacant=True)
            return SeatAnswer(
                value["name"],
                value["id"],
                vacant=False,
                member_id=member.get("id"),
                name=member.get("nameDisplayAs"),
                full_title=member.get("nameFullTitle"),
                address_as=member.get("nameAddressAs"),
                party=(member.get("latestParty") or {}).get("name"),
            )
        return None

    def parliamentary_email(self, member_id: int) -> str | None:
        """The email of the MP's Parliamentary office entry, else any email listed."""
        status, body = self.client.call("GET", f"/api/Members/{member_id}/Contact")
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise CampaignError(f"Members API: contact lookup for member {member_id} failed: HTTP {status}")
        entries: list[dict[str, Any]] = [e for e in body.get("value") or [] if isinstance(e, dict)]
        # Constituency offices are sometimes homes: take only an email, never their address.
        for entry in entries:
            if entry.get("type") == "Parliamentary office" and entry.get("email"):
                return entry["email"]
        for entry in entries:
            if entry.get("email"):
                return entry["email"]
        return None
