"""The member pages: one member's letter behind their personal link, and unsubscribing.

Every page is server-rendered and works without JavaScript. A member keeps one
link per wave: it shows their letters in that wave (the first letter, and any
follow-up or chaser) and nothing else. A wrong link gets the same plain page
whatever the reason, and a client that keeps guessing is turned away for a
while (see throttle.py); a link that ran out says so and offers a new one,
emailed only to the member's address on file.

The same app serves the staff pages under /staff/ (staff.py), behind a login.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from engine.errors import CampaignError
from engine.followup.chase import record_answer
from engine.letters.attachments import carries_attachments
from engine.letters.confirm import (
    MAX_TEXT,
    MemberLetter,
    MemberWave,
    check_send,
    mark_opened,
    not_for_me,
    save_draft,
    send_for_me,
    sent_myself,
    similarity,
    wave_for_token,
)
from engine.letters.documents import letter_document, pdf_bytes, wave_attachments_pdf
from engine.letters.links import check_token, csrf_token, link_token
from engine.letters.merge import letter_words, unfilled_prompts
from engine.letters.pledges import answer_pledge
from engine.letters.render import WaveRenderer
from engine.letters.renewal import send_new_link
from engine.settings import Settings
from engine.store.events import record_event
from engine.store.models import letter_table, member_table, utcnow
from engine.web import staff_browse, staff_members, staff_triage
from engine.web.share import ACTED, share_links
from engine.web.staff import StaffPages, StaffRefused
from engine.web.standing import heading, standing
from engine.web.throttle import GuessThrottle, client_address

TEMPLATES = Path(__file__).parent / "templates"
log = logging.getLogger("campaign.web")
# Phones' and desktop mail programs open far longer mailto: links than this; some older
# ones are known to cut beyond it. A longer letter opens without its text, and the page says so.
MAILTO_MAX = 6000
_WHAT = {"letter": "letter", "follow_up": "follow-up", "chaser": "reminder"}


def _rows(text: str) -> int:
    """Rows enough for the whole letter at a phone's width, for browsers that cannot size a
    text box to its content by themselves."""
    return min(200, sum(1 + len(line) // 40 for line in text.split("\n")) + 2)


def server_config(app: FastAPI, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """How `campaign serve` runs the pages. uvicorn's own X-Forwarded-For handling stays off:
    it believes any proxy on 127.0.0.1 (or in FORWARDED_ALLOW_IPS); CAMPAIGN_TRUSTED_PROXIES decides."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False)


def create_app(
    engine: Engine,
    settings: Settings,
    *,
    throttle: GuessThrottle | None = None,
    staff_throttles: tuple[GuessThrottle, GuessThrottle] | None = None,
) -> FastAPI:
    """The member pages and the staff pages over `engine`; refuses to be made without the link
    secret. `staff_throttles`: the staff login's (per account, per address) throttles."""
    secret = settings.require_secret()
    app = FastAPI(title="Campaign Engine", docs_url=None, redoc_url=None, openapi_url=None)
    pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    guesses = throttle or GuessThrottle()
    renderers: dict[int, WaveRenderer] = {}
    # Each launched wave's attachments as printed pages, rendered once (they never change).
    appended: dict[int, bytes | None] = {}
    logo = settings.logo()

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("campaign_name", settings.campaign_name)
        context.setdefault("organising_email", settings.organising_email)
        context.setdefault("footer", settings.footer)
        context.setdefault("has_logo", logo is not None)
        response = HTMLResponse(pages.get_template(name).render(**context), status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            # mailto: for "Open in my email", which saves the letter and then hands it over.
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self' mailto:"
        )
        return response

    def no_such_page() -> HTMLResponse:
        return page(
            "message.html",
            404,
            heading="This link does not work",
            text="The link may be mistyped or out of date. If you were expecting to see your letter, "
            f"please write to {settings.organising_email}.",
        )

    @app.exception_handler(HTTPException)
    async def unknown_address(request: Request, exc: HTTPException) -> Response:
        # A staff address that does not exist tells a stranger nothing either: without a
        # session it is refused like every other staff URL.
        in_staff = request.url.path == "/staff" or request.url.path.startswith("/staff/")
        if in_staff and await run_in_threadpool(staff.user, request) is None:
            return staff.refusal(request)
        # Members follow links from emails, often cut or mangled by mail programs: any
        # address we do not serve gets the site's own page, never a bare JSON error.
        if exc.status_code in (404, 405):
            return no_such_page()
        return await http_exception_handler(request, exc)

    @app.exception_handler(StaffRefused)
    async def staff_refused(request: Request, exc: StaffRefused) -> Response:
        return exc.response

    def client(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxies)

    staff = StaffPages(engine, settings, page, client, staff_throttles)
    # The other staff pages, each in its own module over the same sessions and roles.
    for pages_module in (staff_browse, staff_triage, staff_members):
        pages_module.add_routes(staff)
    app.include_router(staff.router)
    app.state.staff = staff

    def turned_away(request: Request) -> HTMLResponse | None:
        """429 at once for a client shut out for presenting wrong links: its link is not even
        looked up, so guessing learns nothing, and no worker thread is held."""
        wait = guesses.retry_after(client(request))
        if not wait:
            return None
        response = page(
            "message.html",
            429,
            heading="Too many links that do not work",
            text="Too many wrong or out-of-date links have come from your connection. Please wait a "
            f"minute and try again. If you were expecting to see your letter, please write to "
            f"{settings.organising_email}.",
        )
        response.headers["Retry-After"] = str(wait)
        return response

    def not_found(request: Request) -> HTMLResponse:
        guesses.miss(client(request))
        return no_such_page()

    def renderer_for(found: MemberLetter) -> WaveRenderer:
        wave_id = found.wave["id"]
        if wave_id not in renderers:
            renderers[wave_id] = WaveRenderer(found.wave["frozen"])
        return renderers[wave_id]

    def expired_page(token: str, found: MemberLetter) -> HTMLResponse:
        return page(
            "expired.html",
            410,
            what="pledge" if found.wave["target"] == "pledge" else _WHAT[found.letter["kind"]],
            until=f"{found.letter['token_expires_at']:%d %B %Y}",
            csrf=csrf_token(secret, found.letter["link_nonce"]),
            new_link_action=f"/l/{token}/new-link",
        )

    def mailto_for(found: MemberLetter) -> tuple[str | None, bool]:
        """(the mailto: link with the letter as saved, whether it had to leave the text out)."""
        letter = found.letter
        if not letter["target_email"]:
            return None, False
        start = f"mailto:{quote(letter['target_email'])}?subject={quote(letter['subject'])}"
        whole = f"{start}&body={quote(letter_words(letter))}"
        return (whole, False) if len(whole) <= MAILTO_MAX else (start, True)

    def letter_page(
        wave_page: MemberWave,
        token: str,
        *,
        text: str | None = None,
        address: str | None = None,
        message: str | None = None,
        error: str | None = None,
        unfilled: list[str] | None = None,
        mailto_without_text: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        current = wave_page.current
        actionable = current if current is not None and current.actionable else None
        first = wave_page.letters[0]
        shown = actionable or wave_page.letters[-1]
        context: dict[str, Any] = {}
        if actionable is not None:
            letter = actionable.letter
            draft = text if text is not None else actionable.text
            percent, count = similarity(engine, actionable, draft)
            context = {
                "text": draft,
                "rows": _rows(draft),
                "address": address
                if address is not None
                else (letter["sender_address"] or actionable.member["address"]),
                "needs_address": actionable.needs_address,
                "can_send": actionable.can_send_for_member,
                "can_email": bool(letter["target_email"]),
                "target_suppressed": actionable.target_suppressed,
                "prompts": unfilled_prompts(draft, letter["body_text"]),
                "unfilled": unfilled or [],
                "similar_percent": percent,
                "similar_count": count,
                "what": _WHAT[letter["kind"]],
            }
        earlier = [
            {
                "letter": found.letter,
                "heading": heading(found, len(wave_page.letters) > 1),
                "text": letter_words(found.letter),
                "pdf_url": f"/l/{token}/letter.pdf?letter={found.letter['reference']}",
            }
            for found in reversed(wave_page.letters)
            if found is not actionable and not (found.undecided and found.expired())
        ]
        lines, next_step = standing(wave_page, settings.organising_email)
        return page(
            "letter.html",
            status,
            wave_name=wave_page.wave["name"],
            target_name=first.letter["target_name"],
            target_kind=first.letter["target_kind"],
            target_address=first.letter["target_address"],
            several=len(wave_page.letters) > 1,
            shown=shown.letter,
            actionable=actionable.letter if actionable else None,
            expired=current if current is not None and not current.actionable else None,
            expired_until=f"{current.letter['token_expires_at']:%d %B %Y}" if current else "",
            new_link_action=f"/l/{token}/new-link",
            earlier=earlier,
            standing=lines,
            next_step=next_step,
            csrf=csrf_token(secret, wave_page.opened.letter["link_nonce"]),
            # After a post the browser scrolls to whatever the page answers with (the unfilled
            # prompts, a letter too long to hand over), if there is one.
            form_action=f"/l/{token}#attention",
            message=message,
            error=error,
            mailto_without_text=mailto_without_text,
            max_text=MAX_TEXT,
            target_kind_label="MPs" if first.letter["target_kind"] == "mp" else "employers",
            # Once the member has done their part, they may ask others to join in.
            share=share_links(settings)
            if any(found.letter["state"] in ACTED for found in wave_page.letters)
            else None,
            **context,
        )

    def pledge_page(
        wave_page: MemberWave, token: str, *, error: str | None = None, status: int = 200
    ) -> HTMLResponse:
        found = wave_page.opened
        letter = found.letter
        state = letter["state"]
        answered = state in ("pledged", "declined")
        return page(
            "pledge.html",
            status,
            wave_name=wave_page.wave["name"],
            question=letter["body_text"].strip(),
            state=state,
            answered_on=f" on {letter['decided_at'].day} {letter['decided_at']:%B %Y}"
            if answered and letter["decided_at"]
            else "",
            can_answer=not found.expired(),
            until=f"{letter['token_expires_at'].day} {letter['token_expires_at']:%B %Y}",
            reference=letter["reference"],
            csrf=csrf_token(secret, letter["link_nonce"]),
            form_action=f"/l/{token}",
            error=error,
            share=share_links(settings) if state == "pledged" else None,
        )

    def opened(token: str, request: Request) -> MemberWave | HTMLResponse:
        """What the link opens, or the page that answers instead (turned away, wrong link)."""
        if refused := turned_away(request):
            return refused
        found = wave_for_token(engine, token)
        if found is None:
            return not_found(request)
        return found

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return page(
            "message.html",
            heading=settings.campaign_name,
            text="To see your letter, open the personal link in the email we sent you.",
        )

    @app.get("/logo")
    def logo_image() -> Response:
        if logo is None:
            return no_such_page()
        return Response(logo[0], media_type=logo[1], headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/l/{token}", response_class=HTMLResponse)
    def show_letter(token: str, request: Request) -> HTMLResponse:
        wave_page = opened(token, request)
        if isinstance(wave_page, HTMLResponse):
            return wave_page
        if wave_page.closed:
            return expired_page(token, wave_page.opened)
        mark_opened(engine, wave_page)
        if wave_page.wave["target"] == "pledge":
            return pledge_page(wave_page, token)
        current = wave_page.current
        saved = current is not None and current.actionable and current.letter["final_text"] is not None
        # Only what is true of the letter now is said: nothing from the URL.
        return letter_page(wave_page, token, message="Your changes are saved." if saved else None)

    def bad_form() -> HTMLResponse:
        return page(
            "message.html",
            400,
            heading="Please try again",
            text="This form did not come from your letter's page. Go back, reload it and try again.",
        )

    @app.post("/l/{token}")
    def act_on_letter(
        token: str,
        request: Request,
        action: str = Form(""),
        csrf: str = Form(""),
        letter: str = Form(""),
        text: str = Form(""),
        address: str | None = Form(None),
    ) -> Response:
        wave_page = opened(token, request)
        if isinstance(wave_page, HTMLResponse):
            return wave_page
        if not check_token(csrf_token(secret, wave_page.opened.letter["link_nonce"]), csrf):
            return bad_form()
        # The form names the letter it acts on; only this member's letters in this wave will do.
        found = wave_page.letter(letter)
        if found is None:
            return bad_form()
        back = RedirectResponse(f"/l/{token}", status_code=303)
        if wave_page.wave["target"] == "pledge":
            if action not in ("pledge", "decline"):
                return pledge_page(wave_page, token, error="Choose “I pledge” or “Not for me”.", status=400)
            # An answer can be changed while the link works; after that the page says it ran out.
            if not found.expired():
                answer_pledge(engine, found, action == "pledge")
            return back
        if not found.actionable:
            # Decided already (a double click, a replay) or run out: the page says which.
            return back
        try:
            if action in ("save", "pdf", "mailto"):
                save_draft(engine, found, text, address if found.needs_address else None)
                if action == "pdf":
                    return pdf_response(found)
                if action == "mailto":
                    mailto, cut = mailto_for(found)
                    if mailto is not None and not cut:
                        return RedirectResponse(mailto, status_code=303)
                    return letter_page(
                        wave_page,
                        token,
                        message="Your changes are saved.",
                        mailto_without_text=mailto,
                    )
                return RedirectResponse(f"/l/{token}#text", status_code=303)
            if action == "send":
                unfilled = unfilled_prompts(text, found.letter["body_text"])
                if unfilled:
                    check_send(found, text, address)  # a missing address is said first
                    save_draft(engine, found, text, address if found.needs_address else None)
                    return letter_page(wave_page, token, address=address, unfilled=unfilled)
                send_for_me(engine, settings, found, text, address)
            elif action == "send-anyway":
                send_for_me(engine, settings, found, text, address)
            elif action == "self":
                sent_myself(engine, found, text or None)
            elif action == "optout":
                not_for_me(engine, found)
            else:
                return letter_page(
                    wave_page, token, error="Choose one of the buttons below the letter.", status=400
                )
        except CampaignError as exc:
            return letter_page(
                wave_page,
                token,
                text=text,
                address=address,
                error=str(exc)[:1].upper() + str(exc)[1:] + ".",
                status=400,
            )
        # Post/Redirect/Get: reloading the result page never posts again, and it shows the
        # letter's real state.
        return back

    def pdf_response(found: MemberLetter) -> Response:
        try:
            wave_id = found.wave["id"]
            if wave_id not in appended:
                appended[wave_id] = wave_attachments_pdf(engine, wave_id)
            extra = appended[wave_id] if carries_attachments(found.letter) else None
            data = pdf_bytes([letter_document(found.letter, renderer_for(found))], extra)
        except CampaignError as exc:
            # A server without the PDF libraries: one line for the member and the log, not a 500.
            log.error("member PDF download: %s", exc)
            return page(
                "message.html",
                503,
                heading="The PDF cannot be made just now",
                text=f"{str(exc)[:1].upper()}{str(exc)[1:]}. Please write to "
                f"{settings.organising_email}; you can still copy your letter from its page.",
            )
        return Response(
            data,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="letter-{found.letter["reference"]}.pdf"',
                "Cache-Control": "no-store",
            },
        )

    @app.get("/l/{token}/letter.pdf")
    def letter_pdf(token: str, request: Request, letter: str | None = None) -> Response:
        wave_page = opened(token, request)
        if isinstance(wave_page, HTMLResponse):
            return wave_page
        found = wave_page.letter(letter) if letter else (wave_page.current or wave_page.opened)
        if found is None:
            return not_found(request)
        if found.undecided and found.expired():
            return expired_page(token, found)
        return pdf_response(found)

    @app.post("/l/{token}/new-link", response_class=HTMLResponse)
    def new_link(token: str, request: Request, csrf: str = Form("")) -> HTMLResponse:
        wave_page = opened(token, request)
        if isinstance(wave_page, HTMLResponse):
            return wave_page
        if not check_token(csrf_token(secret, wave_page.opened.letter["link_nonce"]), csrf):
            return bad_form()
        current = wave_page.current
        if current is not None and current.expired():
            send_new_link(engine, settings, wave_page)
        # The same words whether or not an email went: the page tells no one what is on file.
        return page(
            "message.html",
            heading="Check your email",
            text="If we have an email address for you, a new link is on its way to it: it can take a "
            "few minutes to arrive. We send at most one every 15 minutes. If nothing arrives, "
            f"please write to {settings.organising_email}.",
        )

    def letter_by_reference(reference: str, token: str, purpose: str) -> dict[str, Any] | None:
        """The letter a link names by its reference, if the link's token is that letter's own."""
        if not token or len(reference) > 16:
            return None
        with engine.connect() as conn:
            row = conn.execute(select(letter_table).where(letter_table.c.reference == reference)).first()
        if row is None or not check_token(link_token(secret, row.link_nonce, purpose), token):
            return None
        return dict(row._mapping)

    def unsubscribe_target(reference: str, token: str) -> int | None:
        letter = letter_by_reference(reference, token, "unsubscribe")
        return letter["member_id"] if letter is not None else None

    @app.get("/unsubscribe/{reference}/{token}", response_class=HTMLResponse)
    def unsubscribe_form(reference: str, token: str, request: Request) -> HTMLResponse:
        if refused := turned_away(request):
            return refused
        if unsubscribe_target(reference, token) is None:
            return not_found(request)
        return page(
            "message.html",
            heading="Stop campaign emails?",
            text="You will get no more campaign emails from us. Your membership is not affected.",
            form_action=f"/unsubscribe/{reference}/{token}",
            button="Stop campaign emails",
        )

    @app.post("/unsubscribe/{reference}/{token}", response_class=HTMLResponse)
    def unsubscribe(reference: str, token: str, request: Request) -> HTMLResponse:
        if refused := turned_away(request):
            return refused
        member_id = unsubscribe_target(reference, token)
        if member_id is None:
            return not_found(request)
        with engine.begin() as conn:
            conn.execute(
                member_table.update()
                .where(member_table.c.id == member_id, member_table.c.mail_opt_out_at.is_(None))
                .values(mail_opt_out_at=utcnow())
            )
            record_event(conn, "members.unsubscribe", reference=reference)
        return page(
            "message.html",
            heading="You will get no more campaign emails",
            text="Done. If this was a mistake, write to us and we will put it right.",
        )

    answers = {
        "yes": (
            "Yes, they replied",
            "Thank you. Please forward their reply to {email}, keeping the "
            "reference {reference} in the subject, so we can see what they said.",
        ),
        "not-yet": ("Not yet", "Thank you. If they reply later, please forward it to {email}."),
        "no": ("No, and I don't expect them to", "Thank you: that helps us decide what to do next."),
    }

    def answer_target(reference: str, token: str, answer: str) -> dict[str, Any] | None:
        return letter_by_reference(reference, token, "answer") if answer in answers else None

    # The emailed link only shows the choice; a button records it. Mail scanners open
    # every link in a message, and must not answer for the member.
    @app.get("/answer/{reference}/{token}/{answer}", response_class=HTMLResponse)
    def answer_form(reference: str, token: str, answer: str, request: Request) -> HTMLResponse:
        if refused := turned_away(request):
            return refused
        letter = answer_target(reference, token, answer)
        if letter is None:
            return not_found(request)
        return page(
            "message.html",
            heading=f"Has {letter['target_name']} replied to your letter?",
            text=f"Your answer: {answers[answer][0]}.",
            form_action=f"/answer/{reference}/{token}/{answer}",
            button=f"Send my answer: {answers[answer][0]}",
        )

    @app.post("/answer/{reference}/{token}/{answer}", response_class=HTMLResponse)
    def answer(reference: str, token: str, answer: str, request: Request) -> HTMLResponse:
        if refused := turned_away(request):
            return refused
        letter = answer_target(reference, token, answer)
        if letter is None:
            return not_found(request)
        with engine.begin() as conn:
            record_answer(conn, letter["id"], answer.replace("-", "_"))
            record_event(conn, "letters.mp_answer", reference=reference, answer=answer)
        return page(
            "message.html",
            heading="Thank you",
            text=answers[answer][1].format(email=settings.organising_email, reference=reference),
        )

    return app
