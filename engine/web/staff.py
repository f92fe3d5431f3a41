"""The staff pages under /staff/: signing in and out, and the waves with their funnel and chart.

Every page but the login form needs a session: without one a GET is sent to
/staff/login (303) and anything else is answered 401, so no form can be posted
blind. A page that needs more than the weakest role says so with
`require(role)` (viewer < staff < organiser). Sessions live in a cookie
scoped to /staff (HttpOnly, SameSite=Strict, Secure behind https); every form
carries a CSRF field tied to its session. Wrong passwords are throttled per
account and per client address with the same GuessThrottle the member links use.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine, select

from engine.errors import CampaignError
from engine.letters.launch import launch_wave
from engine.reports.campaign import funnel, replies_by_day
from engine.reports.charts import render
from engine.settings import Settings
from engine.store.models import wave_table
from engine.web.accounts import (
    StaffUser,
    authenticate,
    end_session,
    login_form_token,
    same_token,
    session_form_token,
    session_user,
    start_session,
)
from engine.web.throttle import GuessThrottle

SESSION_COOKIE = "campaign_staff"
LOGIN_COOKIE = "campaign_staff_login"
# The funnel's stages the dashboard shows, with the words it shows them by.
COLUMNS = (
    ("letters", "Letters made"),
    ("invited", "Invited"),
    ("opened", "Opened"),
    ("confirmed", "Confirmed"),
    ("sent", "Sent"),
    ("replied", "Replied"),
    ("followed_up", "Followed up"),
)

Page = Callable[..., HTMLResponse]


class StaffRefused(Exception):
    """A staff URL asked for without the session or role it needs; the app answers `response`."""

    def __init__(self, response: Response):
        self.response = response


def login_throttles() -> tuple[GuessThrottle, GuessThrottle]:
    """(per account, per client address): five wrong passwords in 15 minutes are free, then each
    further one shuts that account or address out for twice as long, up to 15 minutes."""
    return (
        GuessThrottle(free=5, window=900.0, max_block=900.0),
        GuessThrottle(free=5, window=900.0, max_block=900.0),
    )


class StaffPages:
    """The /staff/ routes over one database; `require(role)` is the dependency every page uses."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        page: Page,
        client: Callable[[Request], str],
        throttles: tuple[GuessThrottle, GuessThrottle] | None = None,
    ):
        self.engine, self.settings, self.page, self.client = engine, settings, page, client
        self.secret = settings.require_secret()
        self.by_account, self.by_address = throttles or login_throttles()
        self.secure = settings.base_url.startswith("https://")
        self.router = APIRouter(prefix="/staff")
        self._routes()

    # ---- sessions and roles ----------------------------------------------------------

    def user(self, request: Request) -> StaffUser | None:
        return session_user(self.engine, request.cookies.get(SESSION_COOKIE))

    def refusal(self, request: Request) -> Response:
        """What a request without a session gets: the login form for a page, 401 for the rest."""
        if request.method in ("GET", "HEAD"):
            response: Response = RedirectResponse("/staff/login", status_code=303)
        else:
            response = self.page(
                "message.html",
                401,
                heading="Please sign in again",
                text="Your staff session has ended. Sign in at /staff/login and try again.",
            )
        response.headers["Cache-Control"] = "no-store"
        return response

    def require(self, role: str = "viewer") -> Callable[[Request], StaffUser]:
        """A dependency: the signed-in user if their role is `role` or stronger; else the
        request is refused (no session: see `refusal`; too weak a role: 403)."""

        def signed_in(request: Request) -> StaffUser:
            user = self.user(request)
            if user is None:
                raise StaffRefused(self.refusal(request))
            if not user.may(role):
                raise StaffRefused(
                    self.page(
                        "message.html",
                        403,
                        heading="Not for your role",
                        text=f"This needs the {role} role or a stronger one; you are signed in as "
                        f"{user.role}. Ask an organiser if you need it.",
                    )
                )
            return user

        return signed_in

    def csrf(self, request: Request) -> str:
        return session_form_token(self.secret, request.cookies.get(SESSION_COOKIE, ""))

    def check_csrf(self, request: Request, given: str) -> None:
        if not same_token(self.csrf(request), given):
            raise StaffRefused(
                self.page(
                    "message.html",
                    400,
                    heading="Please try again",
                    text="This form did not come from a page of your session. Go back, reload it "
                    "and try again.",
                )
            )

    # ---- pages ---------------------------------------------------------------------------

    def login_page(self, *, error: str | None = None, email: str = "", status: int = 200) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        response = self.page(
            "staff_login.html",
            status,
            csrf=login_form_token(self.secret, nonce),
            email=email,
            error=error,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=3600,
            path="/staff/login",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        return response

    def _routes(self) -> None:
        router = self.router
        viewer = Depends(self.require("viewer"))
        organiser = Depends(self.require("organiser"))

        @router.get("/login", response_class=HTMLResponse)
        def login_form(request: Request) -> Response:
            if self.user(request) is not None:
                return RedirectResponse("/staff/", status_code=303)
            return self.login_page()

        @router.post("/login")
        def login(
            request: Request, email: str = Form(""), password: str = Form(""), csrf: str = Form("")
        ) -> Response:
            nonce = request.cookies.get(LOGIN_COOKIE, "")
            if not nonce or not same_token(login_form_token(self.secret, nonce), csrf):
                return self.login_page(
                    error="The form had run out or did not come from this site: please sign in again.",
                    email=email[:254],
                    status=400,
                )
            account = email.strip().lower()[:254]
            address = self.client(request)
            wait = max(self.by_account.retry_after(account), self.by_address.retry_after(address))
            if wait:
                # Turned away before the password is checked, so guessing learns nothing.
                response = self.login_page(
                    error=f"Too many wrong passwords. Please wait {wait} seconds and try again.",
                    email=email[:254],
                    status=429,
                )
                response.headers["Retry-After"] = str(wait)
                return response
            user = authenticate(self.engine, email, password)
            if user is None:
                self.by_account.miss(account)
                self.by_address.miss(address)
                return self.login_page(
                    error="Wrong email address or password.", email=email[:254], status=401
                )
            token = start_session(self.engine, user, self.settings.staff_session_hours)
            response = RedirectResponse("/staff/", status_code=303)
            response.set_cookie(
                SESSION_COOKIE,
                token,
                max_age=int(self.settings.staff_session_hours * 3600),
                path="/staff",
                secure=self.secure,
                httponly=True,
                samesite="strict",
            )
            response.delete_cookie(LOGIN_COOKIE, path="/staff/login")
            return response

        @router.post("/logout")
        def logout(request: Request, csrf: str = Form(""), user: StaffUser = viewer) -> Response:
            self.check_csrf(request, csrf)
            end_session(self.engine, request.cookies.get(SESSION_COOKIE), user)
            response = RedirectResponse("/staff/login", status_code=303)
            response.delete_cookie(
                SESSION_COOKIE, path="/staff", secure=self.secure, httponly=True, samesite="strict"
            )
            # Tell the browser to drop what it kept of the staff pages (the back button).
            response.headers["Clear-Site-Data"] = '"cache"'
            return response

        @router.get("/", response_class=HTMLResponse)
        def dashboard(request: Request, user: StaffUser = viewer) -> HTMLResponse:
            return self.page(
                "staff_home.html",
                user=user,
                csrf=self.csrf(request),
                waves=wave_funnels(self.engine),
                drafts=draft_waves(self.engine),
            )

        @router.post("/waves/{wave_id}/launch")
        def launch(
            request: Request,
            wave_id: int,
            csrf: str = Form(""),
            user: StaffUser = organiser,
        ) -> Response:
            self.check_csrf(request, csrf)
            name = draft_wave_name(self.engine, wave_id)
            if name is not None:
                try:
                    # In this process: the pages' server is no place to spawn merging workers.
                    launch_wave(self.engine, name, self.settings, parallel=False, by=user.email)
                except CampaignError as exc:
                    return self.page(
                        "message.html",
                        400,
                        heading="The wave was not launched",
                        text=f"{str(exc)[:1].upper()}{str(exc)[1:]}. Nothing was made or sent; "
                        f"check it with: campaign wave launch {name!r}",
                    )
            # Launched now or already (a double click): the dashboard shows which.
            return RedirectResponse("/staff/", status_code=303)

        @router.get("/waves/{wave_id}/chart.svg")
        def wave_chart(wave_id: int, user: StaffUser = viewer) -> Response:
            name = launched_wave_name(self.engine, wave_id)
            if name is None:
                return self.page(
                    "message.html", 404, heading="No such wave", text="No launched wave has that number."
                )
            svg = render(funnel(self.engine, name), replies_by_day(self.engine, name), "svg")
            return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})


def draft_waves(engine: Engine) -> list[dict[str, Any]]:
    """Waves made but not launched yet, oldest first: what an organiser may launch from here."""
    w = wave_table.c
    with engine.connect() as conn:
        return [
            dict(row._mapping)
            for row in conn.execute(
                select(w.id, w.name, w.target, w.subject).where(w.status == "draft").order_by(w.id)
            )
        ]


def draft_wave_name(engine: Engine, wave_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(wave_table.c.name).where(wave_table.c.id == wave_id, wave_table.c.status == "draft")
        ).scalar()


def launched_wave_name(engine: Engine, wave_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(wave_table.c.name).where(wave_table.c.id == wave_id, wave_table.c.status == "launched")
        ).scalar()


def wave_funnels(engine: Engine) -> list[dict[str, Any]]:
    """Each launched wave, oldest first, with its funnel's counts (as `campaign report WAVE`)."""
    with engine.connect() as conn:
        names = list(
            conn.execute(
                select(wave_table.c.id, wave_table.c.name)
                .where(wave_table.c.status == "launched")
                .order_by(wave_table.c.id)
            )
        )
    waves = []
    for wave_id, name in names:
        stages = {stage["stage"]: stage for stage in funnel(engine, name)["funnel"]}
        waves.append(
            {
                "id": wave_id,
                "name": name,
                "stages": [
                    {
                        "key": key,
                        "label": label,
                        "count": stages[key]["count"],
                        "share": f"{stages[key]['share']:.0%}",
                    }
                    for key, label in COLUMNS
                ],
            }
        )
    return waves
