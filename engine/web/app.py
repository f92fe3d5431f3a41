"""The member pages: one member's letter behind their personal link, and unsubscribing.

Every page is server-rendered and works without JavaScript. A link shows one
letter and nothing else; a wrong or expired link gets the same plain page
whatever the reason, and a client that keeps guessing is turned away for a
while (see throttle.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Engine, select

from engine.errors import CampaignError
from engine.followup.chase import record_answer
from engine.letters.confirm import (
    MAX_TEXT,
    MemberLetter,
    letter_for_token,
    not_for_me,
    send_for_me,
    sent_myself,
    similarity,
)
from engine.letters.documents import letter_document, pdf_bytes
from engine.letters.links import check_token, csrf_token, link_token
from engine.letters.merge import placeholders, without_placeholders
from engine.letters.render import WaveRenderer
from engine.settings import Settings
from engine.store.events import record_event
from engine.store.models import letter_table, member_table, utcnow
from engine.web.throttle import GuessThrottle, client_address

TEMPLATES = Path(__file__).parent / "templates"
_DONE = {
    "send": "Thank you: your letter is queued to be sent.",
    "self": "Thank you for sending your letter.",
    "optout": "Understood: this letter will not be sent.",
    "already": "You had already made your choice for this letter; nothing more was done.",
}


def server_config(app: FastAPI, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """How `campaign serve` runs the pages. uvicorn's own X-Forwarded-For handling stays off:
    it believes any proxy on 127.0.0.1 (or in FORWARDED_ALLOW_IPS); CAMPAIGN_TRUSTED_PROXIES decides."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, proxy_headers=False)


def create_app(engine: Engine, settings: Settings, *, throttle: GuessThrottle | None = None) -> FastAPI:
    """The member pages over `engine`; refuses to be made without the link secret."""
    secret = settings.require_secret()
    app = FastAPI(title="Campaign Engine", docs_url=None, redoc_url=None, openapi_url=None)
    pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    guesses = throttle or GuessThrottle()
    renderers: dict[int, WaveRenderer] = {}

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("campaign_name", settings.campaign_name)
        context.setdefault("organising_email", settings.organising_email)
        response = HTMLResponse(pages.get_template(name).render(**context), status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        )
        return response

    def client(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxies)

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
        return page(
            "message.html",
            404,
            heading="This link does not work",
            text="The link may be mistyped or out of date. If you were expecting to see your letter, "
            f"please write to {settings.organising_email}.",
        )

    def renderer_for(found: MemberLetter) -> WaveRenderer:
        wave_id = found.wave["id"]
        if wave_id not in renderers:
            renderers[wave_id] = WaveRenderer(found.wave["frozen"])
        return renderers[wave_id]

    def letter_page(
        found: MemberLetter,
        token: str,
        *,
        text: str | None = None,
        address: str | None = None,
        message: str | None = None,
        error: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        letter = found.letter
        current = text if text is not None else found.text
        percent, count = similarity(engine, found, current) if found.undecided else (0, 0)
        mailto = None
        if letter["target_email"]:
            mailto = (
                f"mailto:{quote(letter['target_email'])}"
                f"?subject={quote(letter['subject'])}&body={quote(current[:1500])}"
            )
        member = found.member
        return page(
            "letter.html",
            status,
            wave_name=found.wave["name"],
            letter=letter,
            state=letter["state"],
            undecided=found.undecided,
            text=current if found.undecided else without_placeholders(current),
            address=address if address is not None else (letter["sender_address"] or member["address"]),
            needs_address=found.needs_address,
            can_send=found.can_send_for_member,
            target_suppressed=found.target_suppressed,
            csrf=csrf_token(secret, letter["link_nonce"]),
            form_action=f"/l/{token}",
            pdf_url=f"/l/{token}/letter.pdf",
            mailto=mailto,
            message=message,
            error=error,
            prompts=placeholders(current) if found.undecided else [],
            similar_percent=percent,
            similar_count=count,
            max_text=MAX_TEXT,
            target_kind_label="MPs" if letter["target_kind"] == "mp" else "employers",
            sent_on=f"{letter['sent_at']:%d %B %Y}" if letter["sent_at"] else "",
        )

    @app.get("/", response_class=HTMLResponse)
    def home() -> HTMLResponse:
        return page(
            "message.html",
            heading=settings.campaign_name,
            text="To see your letter, open the personal link in the email we sent you.",
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/l/{token}", response_class=HTMLResponse)
    def show_letter(token: str, request: Request, done: str | None = None) -> HTMLResponse:
        if refused := turned_away(request):
            return refused
        found = letter_for_token(engine, token)
        if found is None:
            return not_found(request)
        return letter_page(found, token, message=_DONE.get(done or ""))

    @app.post("/l/{token}")
    def act_on_letter(
        token: str,
        request: Request,
        action: str = Form(""),
        csrf: str = Form(""),
        text: str = Form(""),
        address: str | None = Form(None),
    ) -> Response:
        if refused := turned_away(request):
            return refused
        found = letter_for_token(engine, token)
        if found is None:
            return not_found(request)
        if not check_token(csrf_token(secret, found.letter["link_nonce"]), csrf):
            return page(
                "message.html",
                400,
                heading="Please try again",
                text="This form did not come from your letter's page. Go back, reload it and try again.",
            )
        try:
            if action == "send":
                done = send_for_me(engine, settings, found, text, address)
            elif action == "self":
                done = sent_myself(engine, found, text or None)
            elif action == "optout":
                done = not_for_me(engine, found)
            else:
                return letter_page(
                    found, token, error="Choose one of the buttons below the letter.", status=400
                )
        except CampaignError as exc:
            return letter_page(
                found,
                token,
                text=text,
                address=address,
                error=str(exc)[:1].upper() + str(exc)[1:] + ".",
                status=400,
            )
        # Post/Redirect/Get: reloading the result page never posts again.
        return RedirectResponse(f"/l/{token}?done={action if done else 'already'}", status_code=303)

    @app.get("/l/{token}/letter.pdf")
    def letter_pdf(token: str, request: Request) -> Response:
        if refused := turned_away(request):
            return refused
        found = letter_for_token(engine, token)
        if found is None:
            return not_found(request)
        data = pdf_bytes([letter_document(found.letter, renderer_for(found))])
        return Response(
            data,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="letter-{found.letter["reference"]}.pdf"',
                "Cache-Control": "no-store",
            },
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
