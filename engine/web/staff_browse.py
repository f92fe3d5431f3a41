"""A wave's letters (filtered by state, region, employer and outcome), and each employer's
and MP's page with their letters, replies and response times.

Every page here is a GET for the viewer role and changes nothing. Filters, sorting and paging are
plain query parameters (a GET form and links), so the pages work without JavaScript and each view
can be bookmarked or sent to a colleague. A query parameter is read by hand rather than typed by
FastAPI, so a mangled one gets the page again with a one-line error, not a JSON 422.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from engine.errors import CampaignError
from engine.reports.browse import (
    FILTERS,
    NOT_CODED,
    OUTCOME_WORDS,
    PAGE_SIZE,
    STATE_WORDS,
    TARGET_KINDS,
    TARGET_SORTS,
    check_filter,
    employers_written_to,
    find_wave,
    launched_waves,
    letter_choices,
    list_letters,
    pages_of,
    printable,
    state_meanings,
    target_letters,
    target_replies,
    target_summary,
    target_table,
)
from engine.web.accounts import StaffUser
from engine.web.staff import StaffPages

LONDON = ZoneInfo("Europe/London")
# Ids and page numbers as a person would type them; anything else is "not found" or refused.
_NUMBER = re.compile(r"[0-9]{1,9}")


def add_routes(pages: StaffPages) -> None:
    """Adds this module's pages to `pages.router` (each with `pages.require(role)`)."""
    router = pages.router
    viewer = Depends(pages.require("viewer"))
    engine = pages.engine

    def show(
        template: str, request: Request, user: StaffUser, status: int = 200, **context: Any
    ) -> HTMLResponse:
        return pages.page(template, status, user=user, csrf=pages.csrf(request), **context)

    def not_found(request: Request, user: StaffUser, heading: str, text: str) -> HTMLResponse:
        return show("staff_not_found.html", request, user, 404, heading=heading, text=text)

    @router.get("/waves/{wave_id}/letters", response_class=HTMLResponse)
    def wave_letters(request: Request, wave_id: str, user: StaffUser = viewer) -> HTMLResponse:
        wave = find_wave(engine, int(wave_id)) if _NUMBER.fullmatch(wave_id) else None
        if wave is None:
            return not_found(
                request,
                user,
                "No such wave",
                "No launched wave has this number. The waves page lists them, each with its letters.",
            )
        query = request.query_params
        given = {name: query.get(name, "") for name in FILTERS}
        choices = letter_choices(engine, wave["id"])
        context: dict[str, Any] = {
            "wave": wave,
            "meanings": state_meanings([c["value"] for c in choices["state"]]),
        }
        try:
            wanted = check_filter(choices, given)
            number = _page_number(query.get("page"))
        except CampaignError as exc:
            return show(
                "staff_letters.html",
                request,
                user,
                400,
                error=str(exc),
                filters=_filter_fields(choices, {}),
                **context,
            )
        found = list_letters(engine, wave["id"], wanted, number, PAGE_SIZE)
        chosen = {name: getattr(wanted, name) for name in FILTERS if getattr(wanted, name)}
        base = f"/staff/waves/{wave['id']}/letters"
        employers = employers_written_to(engine, [row["employer_key"] for row in found["rows"]])
        return show(
            "staff_letters.html",
            request,
            user,
            filters=_filter_fields(choices, chosen),
            count_line=_count_line(found, "letter", "letters"),
            rows=[_letter_row(row, employers) for row in found["rows"]],
            pager=_pager(base, chosen, found),
            filtered=bool(chosen),
            **context,
        )

    @router.get("/targets", response_class=HTMLResponse)
    def targets(request: Request, user: StaffUser = viewer) -> HTMLResponse:
        query = request.query_params
        waves = launched_waves(engine)
        wave_value, kind, sort = (
            query.get("wave", ""),
            query.get("kind", ""),
            query.get("sort", "") or "silent",
        )
        form = {"wave": wave_value, "kind": kind, "sort": sort}
        context: dict[str, Any] = {"waves": waves, "form": form, "kinds": TARGET_KINDS, "sorts": SORT_WORDS}
        try:
            wave = _chosen_wave(waves, wave_value)
            if kind and kind not in TARGET_KINDS:
                raise CampaignError(f"kind: '{printable(kind)}' is not employer or mp")
            if sort not in TARGET_SORTS:
                raise CampaignError(f"sort: '{printable(sort)}' is not one of {', '.join(TARGET_SORTS)}")
            number = _page_number(query.get("page"))
        except CampaignError as exc:
            context["form"] = {"wave": "", "kind": "", "sort": "silent"}
            return show("staff_targets.html", request, user, 400, error=str(exc), **context)
        rows = target_table(engine, wave["name"] if wave else None, kind or None, sort)
        number, count = pages_of(len(rows), number, PAGE_SIZE)
        found = {"total": len(rows), "page": number, "pages": count, "per_page": PAGE_SIZE}
        kept = {k: v for k, v in (("wave", wave_value), ("kind", kind)) if v}
        return show(
            "staff_targets.html",
            request,
            user,
            wave=wave,
            rows=[_target_row(row) for row in rows[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]],
            count_line=_count_line(found, *NOUNS[kind], matching=False),
            pager=_pager("/staff/targets", {**kept, "sort": sort}, found),
            sort_links={s: "/staff/targets?" + urlencode({**kept, "sort": s}) for s in TARGET_SORTS},
            both_kinds=not kind,
            **context,
        )

    @router.get("/targets/{kind}/{key:path}", response_class=HTMLResponse)
    def target(request: Request, kind: str, key: str, user: StaffUser = viewer) -> HTMLResponse:
        # A NUL cannot be in a key (PostgreSQL would refuse the query): such an address is no page.
        summary = target_summary(engine, kind, key) if key and "\x00" not in key else None
        if summary is None:
            return not_found(
                request,
                user,
                "No such employer or MP",
                "No letter of a launched wave was written to this employer or MP. "
                "The Employers and MPs page lists those that were.",
            )
        try:
            number = _page_number(request.query_params.get("page"))
        except CampaignError as exc:
            number, error = 1, str(exc)
        else:
            error = None
        letters = target_letters(engine, kind, key, number, PAGE_SIZE)
        replies = target_replies(engine, kind, key)
        base = f"/staff/targets/{quote(kind, safe='')}/{quote(key, safe='')}"
        return show(
            "staff_target.html",
            request,
            user,
            400 if error else 200,
            error=error,
            kind_word=TARGET_KINDS[kind],
            target=_target_row(summary),
            letters=[_letter_row(row, set()) for row in letters["rows"]],
            letters_line=_count_line(letters, "letter", "letters", matching=False),
            pager=_pager(base, {}, letters),
            replies=[_reply_row(row) for row in replies["rows"]],
            replies_total=replies["total"],
            meanings=state_meanings(sorted({row["state"] for row in letters["rows"]})),
        )


NOUNS = {
    "": ("employer or MP", "employers and MPs"),
    "employer": ("employer", "employers"),
    "mp": ("MP", "MPs"),
}
SORT_WORDS = {
    "silent": "most silent first",
    "slowest": "slowest to answer first",
    "name": "by name",
    "letters": "most letters first",
}


def _page_number(value: str | None) -> int:
    if value is None or value == "":
        return 1
    if not _NUMBER.fullmatch(value) or int(value) < 1:
        raise CampaignError(f"page: '{printable(value)}' is not a page number")
    return int(value)


def _chosen_wave(waves: list[dict[str, Any]], value: str) -> dict[str, Any] | None:
    if not value:
        return None
    for wave in waves:
        if str(wave["id"]) == value:
            return wave
    raise CampaignError(f"wave: '{printable(value)}' is not a launched wave")


def _filter_fields(choices: dict[str, list[dict[str, Any]]], chosen: dict[str, str]) -> list[dict[str, Any]]:
    """Each filter's <select>: its label and options, the chosen one marked. A chosen value no
    letter has any more (a bookmark from last week) is kept, with 0, so the form says what it shows."""
    labels = {
        "state": "State",
        "region": "Member's region",
        "employer": "Member's employer",
        "outcome": "Reply outcome",
    }
    words = {"state": STATE_WORDS, "outcome": OUTCOME_WORDS}
    fields = []
    for name in FILTERS:
        options = [dict(option, selected=option["value"] == chosen.get(name)) for option in choices[name]]
        value = chosen.get(name)
        if value and not any(option["selected"] for option in options):
            options.append(
                {"value": value, "label": words.get(name, {}).get(value, value), "count": 0, "selected": True}
            )
        fields.append({"name": name, "label": labels[name], "options": options})
    return fields


def _count_line(found: dict[str, Any], one: str, many: str, matching: bool = True) -> str:
    """ "312 letters match; showing 1–100." (without `matching`: "312 letters; …")."""
    total = found["total"]
    if total == 0:
        return f"No {many} match." if matching else f"No {many}."
    first = (found["page"] - 1) * found["per_page"] + 1
    last = min(total, found["page"] * found["per_page"])
    noun = one if total == 1 else many
    verb = "" if not matching else " matches" if total == 1 else " match"
    return f"{total:,} {noun}{verb}; showing {first:,}–{last:,}."


def _pager(base: str, kept: dict[str, str], found: dict[str, Any]) -> dict[str, str | None]:
    def at(page: int) -> str:
        query = urlencode({**kept, "page": page} if page > 1 else kept)
        return f"{base}?{query}" if query else base

    page, pages = found["page"], found["pages"]
    return {
        "previous": at(page - 1) if page > 1 else None,
        "next": at(page + 1) if page < pages else None,
        "where": f"Page {page} of {pages}",
    }


def _day(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LONDON).strftime("%-d %b %Y")


def target_url(kind: str | None, key: str | None) -> str | None:
    """The page of an employer or MP; None for a fixed recipient or a pledge, which have none."""
    if kind not in TARGET_KINDS or not key:
        return None
    return f"/staff/targets/{kind}/{quote(key, safe='')}"


def _letter_row(row: dict[str, Any], employers: set[str]) -> dict[str, Any]:
    name = " ".join(part for part in (row.get("first_name"), row.get("last_name")) if part)
    employer_key = row.get("employer_key")
    return {
        **row,
        "member": name or row["membership_no"],
        "member_url": f"/staff/members/{quote(row['membership_no'], safe='')}",
        "target_url": target_url(row.get("target_kind"), row.get("target_key")),
        "employer_url": target_url("employer", employer_key) if employer_key in employers else None,
        "state_words": STATE_WORDS.get(row["state"], row["state"]),
        "sent": _day(row["sent_at"]),
        "replied": _day(row["replied_at"]),
        "outcome_words": [
            OUTCOME_WORDS.get(outcome, outcome) + ("" if decided else " (suggested)")
            for outcome, decided in row.get("outcomes", [])
        ],
    }


def _target_row(row: dict[str, Any]) -> dict[str, Any]:
    days = row["median_working_days"]
    return {
        **row,
        "url": target_url(row["kind"], row["key"]),
        "kind_word": TARGET_KINDS.get(row["kind"], row["kind"]),
        "median": "" if days is None else f"{days:g}",
        "outcome_words": [
            f"{OUTCOME_WORDS.get(outcome, outcome)}: {count}"
            for outcome, count in sorted(row["outcomes"].items())
        ],
    }


def _reply_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "received": _day(row["received_at"]),
        "subject": row["subject"] or "(no subject)",
        "outcome_words": OUTCOME_WORDS.get(row["shown_outcome"], row["shown_outcome"])
        + ("" if row["outcome"] or row["shown_outcome"] == NOT_CODED else " (suggested)"),
        "url": f"/staff/replies/{row['id']}",
    }
