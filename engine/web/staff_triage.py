"""The triage queue: replies waiting for staff to say which letter they answer, or that they
answer none; outcomes set or corrected; paper replies logged with a scan; mistaken matches undone.

Every page is a thin layer over engine/inbox/staff.py, the functions `campaign replies …` calls:
a form posts, the function runs in its one transaction (naming the staff user in its event),
and the browser is sent back to the message's page, which shows what the database now says.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from engine.errors import CampaignError
from engine.inbox.staff import (
    dismiss,
    list_messages,
    log_paper_reply,
    match_manually,
    received_date,
    search_letters,
    set_outcome,
    show_message,
    undo_match,
)
from engine.store.models import OUTCOMES
from engine.web.accounts import StaffUser
from engine.web.staff import StaffPages

# The outcomes as staff read them, in the order of OUTCOMES.
OUTCOME_LABELS = {
    "supportive": "Supportive",
    "non_committal": "Non-committal",
    "refusal": "Refusal",
    "holding": "Holding reply (an answer promised later)",
    "acknowledgement": "Acknowledgement only",
}
assert tuple(OUTCOME_LABELS) == OUTCOMES
# A scan is kept in the database with its message: a few pages, not a whole file server.
SCAN_LIMIT = 10 * 1024 * 1024
# What a scan may be, told by its first bytes (a name or a content type says whatever the sender likes).
SCAN_TYPES = ((b"%PDF-", "PDF"), (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
# The form's text fields and the scan's multipart overhead: a body longer than this is refused unread.
_BODY_LIMIT = SCAN_LIMIT + 64 * 1024
_KINDS = {
    "reply": "Reply",
    "auto_reply": "Automatic reply",
    "bounce": "Bounce",
    "complaint": "Complaint",
    "unrelated": "Not about a letter",
}


def add_routes(pages: StaffPages) -> None:
    """Adds this module's pages to `pages.router` (each with `pages.require(role)`)."""
    router, engine, settings = pages.router, pages.engine, pages.settings
    viewer = Depends(pages.require("viewer"))
    staff = Depends(pages.require("staff"))

    @router.get("/triage", response_class=HTMLResponse)
    def triage(request: Request, user: StaffUser = viewer) -> HTMLResponse:
        return pages.page(
            "staff_triage.html",
            user=user,
            csrf=pages.csrf(request),
            may_change=user.may("staff"),
            messages=queue(engine),
        )

    def reply_page(
        request: Request,
        user: StaffUser,
        reply_id: str,
        *,
        q: str = "",
        done: str = "",
        error: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        number = message_number(reply_id)
        try:
            message = show_message(engine, number) if number is not None else None
        except CampaignError:
            message = None
        if message is None:
            return pages.page(
                "message.html",
                404,
                heading="No such message",
                text="There is no message with that number. Go back to Replies to sort (/staff/triage).",
            )
        q = one_line(q)[:100]
        return pages.page(
            "staff_reply.html",
            status,
            user=user,
            csrf=pages.csrf(request),
            may_change=user.may("staff"),
            m=describe(message),
            q=q,
            results=search_letters(engine, q) if q and waiting(message) else [],
            notice=None if error else notice_for(done, message),
            error=error,
            outcomes=OUTCOME_LABELS,
        )

    @router.get("/replies/{reply_id}", response_class=HTMLResponse)
    def reply(
        request: Request, reply_id: str, q: str = "", done: str = "", user: StaffUser = viewer
    ) -> HTMLResponse:
        return reply_page(request, user, reply_id, q=q, done=done)

    def act(
        request: Request,
        user: StaffUser,
        reply_id: str,
        csrf: str,
        done: str,
        action: Callable[[int], Any],
    ) -> Response:
        """CSRF checked, the library function run; then back to the message (or its page again,
        400, with the one line the refusal says)."""
        pages.check_csrf(request, csrf)
        number = message_number(reply_id)
        if number is None:
            return reply_page(request, user, reply_id)
        try:
            action(number)
        except CampaignError as error:
            return reply_page(request, user, reply_id, error=str(error), status=400)
        return RedirectResponse(f"/staff/replies/{number}?done={done}", status_code=303)

    @router.post("/replies/{reply_id}/match")
    def match(
        request: Request,
        reply_id: str,
        reference: str = Form(""),
        csrf: str = Form(""),
        user: StaffUser = staff,
    ) -> Response:
        def run(number: int) -> Any:
            return match_manually(
                engine, settings, number, checked_reference(reference, "Letter"), by=user.email
            )

        return act(request, user, reply_id, csrf, "matched", run)

    @router.post("/replies/{reply_id}/unrelated")
    def unrelated(request: Request, reply_id: str, csrf: str = Form(""), user: StaffUser = staff) -> Response:
        return act(
            request, user, reply_id, csrf, "unrelated", lambda number: dismiss(engine, number, by=user.email)
        )

    @router.post("/replies/{reply_id}/outcome")
    def outcome(
        request: Request,
        reply_id: str,
        outcome: str = Form(""),
        csrf: str = Form(""),
        user: StaffUser = staff,
    ) -> Response:
        def run(number: int) -> Any:
            if outcome not in OUTCOME_LABELS:
                raise CampaignError("Outcome: choose one of the outcomes in the list")
            return set_outcome(engine, number, outcome, settings, by=user.email)

        return act(request, user, reply_id, csrf, "outcome", run)

    @router.post("/replies/{reply_id}/undo")
    def undo(request: Request, reply_id: str, csrf: str = Form(""), user: StaffUser = staff) -> Response:
        return act(
            request,
            user,
            reply_id,
            csrf,
            "undone",
            lambda number: undo_match(engine, settings, number, by=user.email),
        )

    def paper_page(
        request: Request, user: StaffUser, *, error: str | None = None, status: int = 200, **values: str
    ) -> HTMLResponse:
        return pages.page(
            "staff_paper.html",
            status,
            user=user,
            csrf=pages.csrf(request),
            error=error,
            values={key: values.get(key, "") for key in ("reference", "received", "author", "note")},
            limit_mb=SCAN_LIMIT // (1024 * 1024),
        )

    @router.get("/paper", response_class=HTMLResponse)
    def paper_form(request: Request, user: StaffUser = staff) -> HTMLResponse:
        return paper_page(request, user)

    @router.post("/paper")
    async def paper(request: Request, user: StaffUser = staff) -> Response:
        # Read by hand, not through Form()/File(), so a body far over the limit is refused
        # before any of it is parsed, and the scan is read no further than the limit.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > _BODY_LIMIT:
            return paper_page(
                request,
                user,
                error=f"Scan: the file is larger than {SCAN_LIMIT // (1024 * 1024)} MB; "
                "scan it at a lower resolution",
                status=400,
            )
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception:  # a body that is not a form we can read: the page again, not a traceback
            return paper_page(
                request, user, error="The form could not be read: please try again.", status=400
            )
        try:
            text = {
                key: value if isinstance(value := form.get(key), str) else ""
                for key in ("csrf", "reference", "received", "author", "note")
            }
            pages.check_csrf(request, text["csrf"])
            upload = form.get("scan")
            scan, scan_name = None, None
            if isinstance(upload, UploadFile):
                scan = await run_in_threadpool(upload.file.read, SCAN_LIMIT + 1)
                scan_name = upload.filename
            values = {key: text[key] for key in ("reference", "received", "author", "note")}
            try:
                done = await run_in_threadpool(
                    log_paper, engine, settings, values, scan, scan_name, user.email
                )
            except CampaignError as error:
                return paper_page(request, user, error=str(error), status=400, **values)
        finally:
            await form.close()
        return RedirectResponse(
            f"/staff/replies/{done['reply']}?done={'already' if done['already'] else 'logged'}",
            status_code=303,
        )


def log_paper(
    engine: Any,
    settings: Any,
    values: dict[str, str],
    scan: bytes | None,
    scan_name: str | None,
    by: str,
) -> dict[str, Any]:
    """The paper form's fields checked, each refusal naming its field, then the reply logged."""
    reference = checked_reference(values["reference"], "Reference")
    if not values["received"].strip():
        raise CampaignError("Date received: give the date it arrived, like 28/11/2026")
    received = received_date(values["received"], "Date received")
    if received > datetime.now(UTC):
        raise CampaignError("Date received: that date has not come yet")
    author = one_line(values["author"])
    if len(author) > 200:
        raise CampaignError("Written by: at most 200 characters")
    note = values["note"].replace("\0", "").replace("\r\n", "\n").strip()
    if len(note) > 5000:
        raise CampaignError("What it says: at most 5,000 characters")
    if scan is not None and len(scan) > SCAN_LIMIT:
        raise CampaignError(
            f"Scan: the file is larger than {SCAN_LIMIT // (1024 * 1024)} MB; scan it at a lower resolution"
        )
    if not scan:
        scan, scan_name = None, None  # an empty file field: no scan
    else:
        kind = next((name for magic, name in SCAN_TYPES if scan.startswith(magic)), None)
        if kind is None:
            raise CampaignError("Scan: only a PDF, JPEG or PNG file can be kept with a paper reply")
        scan_name = file_name(scan_name, kind)
    try:
        return log_paper_reply(
            engine,
            settings,
            reference,
            received,
            author=author or None,
            scan=scan,
            scan_name=scan_name,
            note=note or None,
            by=by,
        )
    except CampaignError as error:
        if str(error).startswith("no letter with reference"):
            raise CampaignError(f"Reference: {error}") from None
        raise


def checked_reference(value: str, field: str) -> str:
    """A letter reference as typed or posted, refused (naming the field) unless it could be one."""
    reference = value.strip()
    if not reference:
        raise CampaignError(f"{field}: give the reference printed on the letter, like K7M2Q-9XH4T")
    # Checked before any query: a NUL or a stray character has no business reaching the database.
    if (
        len(reference) > 40
        or not reference.replace("-", "").isascii()
        or not reference.replace("-", "").isalnum()
    ):
        raise CampaignError(f"{field}: a letter's reference is letters and digits, like K7M2Q-9XH4T")
    return reference


def one_line(value: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def file_name(given: str | None, kind: str) -> str:
    """The uploaded file's own name, as a plain name (no folders, no control characters)."""
    name = one_line(os.path.basename((given or "").replace("\\", "/")))[:100]
    return name or f"scan.{ {'PDF': 'pdf', 'JPEG': 'jpg', 'PNG': 'png'}[kind] }"


def message_number(reply_id: str) -> int | None:
    return int(reply_id) if reply_id.isdigit() and len(reply_id) < 12 else None


def queue(engine: Any) -> list[dict[str, Any]]:
    """The messages waiting for staff, the one waiting longest first, with the engine's best guess."""
    rows = list_messages(engine, unmatched=True)
    rows.reverse()  # list_messages gives the newest first
    return [
        {
            "id": row["id"],
            "from": row["from"] or "(no sender)",
            "subject": row["subject"] or "(no subject)",
            "received": row["received"],
            "kind": _KINDS.get(row["kind"], row["kind"]),
            "why": row["triage"] or "not matched to any letter",
            "suggestion": row["suggestions"][0] if row["suggestions"] else None,
        }
        for row in rows
    ]


def waiting(message: dict[str, Any]) -> bool:
    """Whether the message waits for staff (as `list_messages(unmatched=True)` counts it)."""
    if message["triage"]:
        return True
    return (
        message["letter_id"] is None
        and message["kind"] in ("reply", "unrelated")
        and message["match_method"] != "dismissed"
    )


def describe(message: dict[str, Any]) -> dict[str, Any]:
    """What the message page shows of a message, and which of its forms apply."""
    is_waiting = waiting(message)
    return {
        **message,
        "kind_label": _KINDS.get(message["kind"], message["kind"]),
        "waiting": is_waiting,
        "may_match": is_waiting and message["kind"] in ("reply", "unrelated", "auto_reply"),
        "may_undo": message["letter_id"] is not None and message["kind"] in ("reply", "auto_reply"),
        "has_outcome_form": message["kind"] == "reply",
        "chosen_outcome": message["outcome"] or message["suggested_outcome"] or "",
        "outcome_label": OUTCOME_LABELS.get(message["outcome"] or ""),
        "suggested_label": OUTCOME_LABELS.get(message["suggested_outcome"] or ""),
        "dismissed": message["match_method"] == "dismissed",
    }


def notice_for(done: str, message: dict[str, Any]) -> str | None:
    """The line that says what an action did, read from the message as stored now (the URL only
    says which action was taken: a stale or hand-typed one shows nothing it did not do)."""
    if done == "matched" and message["reference"]:
        return f"Matched to letter {message['reference']}, which is now {message['letter_state']}."
    if done == "unrelated" and message["match_method"] == "dismissed":
        return "Marked as not about any letter: it has left the queue."
    if done == "outcome" and message["outcome"]:
        return f"Outcome saved: {OUTCOME_LABELS[message['outcome']]}."
    if done == "undone" and message["reference"] is None and waiting(message):
        return "The match was undone: this message waits in the queue again."
    if done in ("logged", "already") and message["source"] == "paper" and message["reference"]:
        first = "This paper reply was logged already" if done == "already" else "Paper reply logged"
        return f"{first} on letter {message['reference']}, which is now {message['letter_state']}."
    return None
