"""postcodes.io and Members API payloads, shaped like the real ones in ../shared/api/."""

from __future__ import annotations

from typing import Any


def postcode_result(
    postcode: str,
    code: str,
    name: str,
    country: str = "England",
    code_2010: str | None = None,
    name_2010: str | None = None,
) -> dict[str, Any]:
    """One `result` object as postcodes.io returns it (a realistic subset of its fields)."""
    outcode, incode = postcode.split()
    return {
        "postcode": postcode,
        "quality": 1,
        "eastings": 551626,
        "northings": 170342,
        "country": country,
        "nhs_ha": "South East Coast",
        "longitude": 0.178871,
        "latitude": 51.411831,
        "european_electoral_region": "South East",
        "region": "South East",
        "incode": incode,
        "outcode": outcode,
        "parliamentary_constituency": name_2010 or name,
        "parliamentary_constituency_2024": name,
        "admin_district": "Sevenoaks",
        "parish": "Hextable",
        "admin_county": "Kent",
        "date_of_introduction": "198001",
        "admin_ward": "Hextable",
        "codes": {
            "admin_district": "E07000111",
            "admin_county": "E10000016",
            "admin_ward": "E05009960",
            "parish": "E04012394",
            "parliamentary_constituency": code_2010 or code,
            "parliamentary_constituency_2024": code,
            "national_park": "E99999999",
            "bua": "E63012222",
        },
    }


def bulk_reply(*items: tuple[str, dict[str, Any] | None]) -> dict[str, Any]:
    return {"status": 200, "result": [{"query": q, "result": r} for q, r in items]}


NOT_FOUND = {"status": 404, "error": "Postcode not found"}
INVALID = {"status": 404, "error": "Invalid postcode"}
TERMINATED_NOT_FOUND = {"status": 404, "error": "Terminated postcode not found"}


def terminated_reply(postcode: str, year: int, month: int) -> dict[str, Any]:
    return {
        "status": 200,
        "result": {
            "postcode": postcode,
            "year_terminated": year,
            "month_terminated": month,
            "longitude": -0.051135,
            "latitude": 51.508774,
            "eastings": 534812,
            "northings": 180747,
        },
    }


def seat_search(
    name: str, seat_id: int, member: dict[str, Any] | None, extra: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A constituency search reply; `member` None means the seat is vacant."""
    items = list(extra or [])
    items.append(
        {
            "value": {
                "id": seat_id,
                "name": name,
                "startDate": "2024-07-04T00:00:00",
                "endDate": None,
                "currentRepresentation": None
                if member is None
                else {
                    "member": {"value": member, "links": []},
                    "representation": {
                        "membershipFrom": name,
                        "membershipFromId": seat_id,
                        "house": 1,
                        "membershipStartDate": "2024-07-04T00:00:00",
                        "membershipEndDate": None,
                    },
                },
            },
            "links": [],
        }
    )
    return {
        "items": items,
        "totalResults": len(items),
        "resultContext": name.lower(),
        "skip": 0,
        "take": 20,
        "links": [],
    }


def mp_member(
    member_id: int, display: str, full_title: str, address_as: str, party: str, seat: str, seat_id: int
) -> dict[str, Any]:
    return {
        "id": member_id,
        "nameListAs": display,
        "nameDisplayAs": display,
        "nameFullTitle": full_title,
        "nameAddressAs": address_as,
        "latestParty": {"id": 4, "name": party, "abbreviation": party[:3], "isIndependentParty": False},
        "gender": "F",
        "latestHouseMembership": {
            "membershipFrom": seat,
            "membershipFromId": seat_id,
            "house": 1,
            "membershipStartDate": "2024-07-04T00:00:00",
            "membershipEndDate": None,
        },
        "thumbnailUrl": f"https://members-api.parliament.uk/api/Members/{member_id}/Thumbnail",
    }


def contact_reply(email: str | None) -> dict[str, Any]:
    return {
        "value": [
            {
                "type": "Constituency office",
                "typeDescription": "Constituency",
                "typeId": 4,
                "isPreferred": False,
                "isWebAddress": False,
                "notes": None,
                "line1": "1 Example Street",
                "line2": "Example Town",
                "line3": None,
                "line4": None,
                "line5": None,
                "postcode": "AB1 2CD",
                "phone": "01234 567890",
                "fax": None,
                "email": "constituency.office@example.org",
            },
            {
                "type": "Parliamentary office",
                "typeDescription": "Parliamentary",
                "typeId": 1,
                "isPreferred": False,
                "isWebAddress": False,
                "notes": None,
                "line1": "House of Commons",
                "line2": "London",
                "line3": None,
                "line4": None,
                "line5": None,
                "postcode": "SW1A 0AA",
                "phone": "020 7219 0000",
                "fax": None,
                "email": email,
            },
        ],
        "links": [],
    }
