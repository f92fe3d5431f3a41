"""Staff accounts and the staff pages over real HTTP: `campaign users`, signing in and out, the
session cookie, CSRF, the login throttle, and every /staff/ URL refused without a session."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
import uvicorn
from fastapi import Depends
from smtp_server import free_port
from sqlalchemy import select
from test_waves import SETTINGS

from engine.cli import main
from engine.store.models import event_table, staff_session_table, staff_user_table, utcnow
from engine.web.accounts import add_user, role_allows
from engine.web.app import create_app, server_config
from engine.web.throttle import GuessThrottle

PASSWORD = "correct horse battery staple"


class StaffSite:
    """The app (member and staff pages) on a real uvicorn server, as `campaign serve` runs it."""

    def __init__(self, engine, settings=SETTINGS, throttles=None, extra_routes=None):
        self.engine = engine
        self.app = create_app(engine, settings, staff_throttles=throttles)
        if extra_routes is not None:
            extra_routes(self.app)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(server_config(self.app, "127.0.0.1", port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)

    def login_form(self, session: requests.Session) -> tuple[str, dict[str, str]]:
        """Open the login page as a browser does: the form's CSRF field, and the cookie it came
        with (handed back explicitly: requests keeps a Secure cookie off plain http)."""
        response = session.get(f"{self.base}/staff/login", allow_redirects=False)
        assert response.status_code == 200
        nonce = re.search(r"campaign_staff_login=([^;]+)", response.headers["set-cookie"]).group(1)
        return form_csrf(response.text), {"campaign_staff_login": nonce}

    def login(self, session: requests.Session, email: str, password: str = PASSWORD) -> requests.Response:
        csrf, cookies = self.login_form(session)
        return session.post(
            f"{self.base}/staff/login",
            data={"email": email, "password": password, "csrf": csrf},
            cookies=cookies,
            allow_redirects=False,
        )


def form_csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def events(engine, action):
    with engine.connect() as conn:
        return [
            row.detail
            for row in conn.execute(
                select(event_table).where(event_table.c.action == action).order_by(event_table.c.id)
            )
        ]


# ---- the command line --------------------------------------------------------------------


def test_users_add_list_role_remove(cli, engine):
    result = cli("users", "add", " Organiser@Union.Example ", "--role", "organiser", "--password", PASSWORD)
    assert result.exit_code == 0, result.output
    assert "Added organiser@union.example (organiser)" in result.output
    # Prompted twice, hidden, when there is no --password.
    prompted = cli.runner.invoke(
        main,
        ["--db", cli.db_url, "users", "add", "viewer@union.example", "--role", "viewer"],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        env={"CAMPAIGN_SECRET_FILE": None},
    )
    assert prompted.exit_code == 0, prompted.output
    assert PASSWORD not in prompted.output

    listed = cli("users", "list", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    assert [(r["email"], r["role"], r["last_login_at"]) for r in rows] == [
        ("organiser@union.example", "organiser", None),
        ("viewer@union.example", "viewer", None),
    ]
    assert set(rows[0]) == {"email", "role", "created_at", "last_login_at", "disabled"}
    table = cli("users", "list").output
    assert "viewer@union.example" in table and "argon2" not in table

    # The hash is argon2id and nothing printed or logged holds the password or the hash.
    with engine.connect() as conn:
        stored = conn.execute(select(staff_user_table.c.password_hash)).scalars().all()
        logged = json.dumps([row.detail for row in conn.execute(select(event_table))])
    assert all(h.startswith("$argon2id$") for h in stored)
    assert PASSWORD not in logged and not any(h in logged for h in stored)

    assert cli("users", "role", "viewer@union.example", "staff").exit_code == 0
    assert json.loads(cli("users", "list", "--json").output)[1]["role"] == "staff"
    assert cli("users", "remove", "VIEWER@union.example").exit_code == 0
    assert [r["email"] for r in json.loads(cli("users", "list", "--json").output)] == [
        "organiser@union.example"
    ]


def test_users_add_refuses_bad_input(cli):
    short = cli("users", "add", "a@union.example", "--role", "staff", "--password", "eleven-char")
    assert short.exit_code == 2
    assert "password: at least 12 characters" in short.output
    assert "eleven-char" not in short.output
    bad = cli("users", "add", "not-an-address", "--role", "staff", "--password", PASSWORD)
    assert bad.exit_code == 2 and "EMAIL: 'not-an-address' is not an email address" in bad.output
    role = cli("users", "add", "a@union.example", "--role", "admin", "--password", PASSWORD)
    assert role.exit_code == 2
    assert cli("users", "add", "a@union.example", "--role", "staff", "--password", PASSWORD).exit_code == 0
    again = cli("users", "add", "A@union.example", "--role", "viewer", "--password", PASSWORD)
    assert again.exit_code == 2 and "a@union.example has an account already" in again.output
    gone = cli("users", "remove", "b@union.example")
    assert gone.exit_code == 2 and "no account for b@union.example" in gone.output
    assert "Traceback" not in gone.output


def test_roles_are_ordered():
    assert role_allows("organiser", "viewer") and role_allows("staff", "staff")
    assert not role_allows("viewer", "staff") and not role_allows("staff", "organiser")


# ---- signing in and out ------------------------------------------------------------------


def test_login_session_cookie_flags_and_logout(engine):
    add_user(engine, "organiser@union.example", "organiser", PASSWORD)
    settings = replace(SETTINGS, base_url="https://campaign.union.example", staff_session_hours=2.0)
    with StaffSite(engine, settings) as site:
        browser = requests.Session()
        response = site.login(browser, "Organiser@union.example")
        assert response.status_code == 303 and response.headers["location"] == "/staff/"
        cookie = next(
            c for c in response.raw.headers.getlist("set-cookie") if c.startswith("campaign_staff=")
        )
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert {"httponly", "secure", "samesite=strict", "path=/staff", "max-age=7200"} <= set(flags)
        token = cookie.split(";")[0].split("=", 1)[1]
        # Stored hashed, with its expiry.
        with engine.connect() as conn:
            row = conn.execute(select(staff_session_table)).one()
        assert row.token_hash != token and len(row.token_hash) == 64
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
        assert timedelta(hours=1, minutes=59) < expires - utcnow() <= timedelta(hours=2)

        # The cookie is Secure, so requests keeps it off plain http: present it as the browser
        # would over https.
        signed_in = {"campaign_staff": token}
        home = requests.get(f"{site.base}/staff/", cookies=signed_in, allow_redirects=False)
        assert home.status_code == 200
        assert "Signed in as organiser@union.example (organiser)" in home.text
        assert home.headers["cache-control"] == "no-store"

        logout = requests.post(
            f"{site.base}/staff/logout",
            data={"csrf": form_csrf(home.text)},
            cookies=signed_in,
            allow_redirects=False,
        )
        assert logout.status_code == 303 and logout.headers["location"] == "/staff/login"
        cleared = logout.headers["set-cookie"]
        assert cleared.startswith('campaign_staff=""') and "Max-Age=0" in cleared
        # The old cookie, kept by a careless browser or a thief, opens nothing now.
        again = requests.get(f"{site.base}/staff/", cookies=signed_in, allow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == "/staff/login"
        with engine.connect() as conn:
            assert conn.execute(select(staff_session_table)).first() is None
    assert [e["email"] for e in events(engine, "staff.login")] == ["organiser@union.example"]
    assert [e["email"] for e in events(engine, "staff.logout")] == ["organiser@union.example"]


def test_plain_http_cookie_is_not_secure_and_session_expires(engine):
    add_user(engine, "viewer@union.example", "viewer", PASSWORD)
    with StaffSite(engine) as site:
        browser = requests.Session()
        response = site.login(browser, "viewer@union.example")
        cookie = next(
            c for c in response.raw.headers.getlist("set-cookie") if c.startswith("campaign_staff=")
        )
        assert "secure" not in cookie.lower() and "Max-Age=28800" in cookie  # 8 hours by default
        assert browser.get(f"{site.base}/staff/", allow_redirects=False).status_code == 200
        # A session past its expiry opens nothing, whatever the cookie says.
        with engine.begin() as conn:
            conn.execute(staff_session_table.update().values(expires_at=utcnow() - timedelta(seconds=1)))
        expired = browser.get(f"{site.base}/staff/", allow_redirects=False)
        assert expired.status_code == 303 and expired.headers["location"] == "/staff/login"


def test_csrf_missing_or_wrong_is_refused(engine):
    add_user(engine, "staff@union.example", "staff", PASSWORD)
    with StaffSite(engine) as site:
        browser = requests.Session()
        # A login form posted without the page's token (from another site, say).
        _, cookies = site.login_form(browser)
        forged = browser.post(
            f"{site.base}/staff/login",
            data={"email": "staff@union.example", "password": PASSWORD},
            cookies=cookies,
            allow_redirects=False,
        )
        assert forged.status_code == 400 and "campaign_staff=" not in forged.headers.get("set-cookie", "")
        assert site.login(browser, "staff@union.example").status_code == 303
        for data in ({}, {"csrf": "0" * 64}):
            refused = browser.post(f"{site.base}/staff/logout", data=data, allow_redirects=False)
            assert refused.status_code == 400
            assert "did not come from a page of your session" in refused.text
        # The session is still there: nothing was done.
        assert browser.get(f"{site.base}/staff/", allow_redirects=False).status_code == 200
        # Another session's token does not do either.
        other = requests.Session()
        site.login(other, "staff@union.example")
        other_token = form_csrf(other.get(f"{site.base}/staff/").text)
        assert browser.post(f"{site.base}/staff/logout", data={"csrf": other_token}).status_code == 400


def test_wrong_password_refused_then_throttled_per_account(engine):
    add_user(engine, "a@union.example", "staff", PASSWORD)
    add_user(engine, "b@union.example", "staff", PASSWORD)
    throttles = (GuessThrottle(free=3, window=900, max_block=900), GuessThrottle(free=100))
    with StaffSite(engine, throttles=throttles) as site:
        browser = requests.Session()
        for _ in range(3):
            wrong = site.login(browser, "a@union.example", "not the password at all")
            assert wrong.status_code == 401 and "Wrong email address or password." in wrong.text
            assert "campaign_staff=" not in wrong.headers.get("set-cookie", "")
        # The right password no longer helps: the account is shut out before it is checked.
        refused = site.login(browser, "a@union.example")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "Too many wrong passwords" in refused.text
        # Another account from the same address signs in as usual.
        assert site.login(requests.Session(), "b@union.example").status_code == 303
    failed = events(engine, "staff.login_failed")
    assert [e["email"] for e in failed] == ["a@union.example"] * 3
    assert "not the password" not in json.dumps(failed)


def test_wrong_passwords_throttled_per_address(engine):
    add_user(engine, "a@union.example", "staff", PASSWORD)
    throttles = (GuessThrottle(free=100), GuessThrottle(free=4, window=900, max_block=900))
    with StaffSite(engine, throttles=throttles) as site:
        browser = requests.Session()
        # Spraying one password over many addresses: each unknown address is a miss.
        for n in range(4):
            assert site.login(browser, f"guess{n}@union.example", "Password123!").status_code == 401
        refused = site.login(browser, "a@union.example")
        assert refused.status_code == 429
    # Unknown addresses are not written down (a password typed in the wrong box would be).
    assert [e["email"] for e in events(engine, "staff.login_failed")] == [None] * 4


def test_disabled_or_removed_account_cannot_sign_in(engine):
    add_user(engine, "gone@union.example", "organiser", PASSWORD)
    with StaffSite(engine) as site:
        browser = requests.Session()
        assert site.login(browser, "gone@union.example").status_code == 303
        with engine.begin() as conn:
            conn.execute(staff_user_table.update().values(disabled=True))
        assert browser.get(f"{site.base}/staff/", allow_redirects=False).status_code == 303
        assert site.login(requests.Session(), "gone@union.example").status_code == 401


# ---- every staff URL needs a session, and some a role -------------------------------------


def test_every_staff_url_is_refused_without_a_session(engine):
    with StaffSite(engine) as site:
        routes = [
            (method, route.path)
            # Every route the staff pages have, so a page added later is checked too.
            for route in site.app.state.staff.router.routes
            if route.path != "/staff/login"
            for method in sorted(route.methods)
            if method != "HEAD"
        ]
        assert ("GET", "/staff/") in routes and ("POST", "/staff/logout") in routes
        # And addresses that do not exist: a stranger learns nothing about which do.
        routes += [("GET", "/staff/no-such-page"), ("POST", "/staff/no-such-page"), ("GET", "/staff/logout")]
        for cookies in ({}, {"campaign_staff": "made-up-token"}):
            for method, path in routes:
                response = requests.request(
                    method, f"{site.base}{path}", cookies=cookies, data={}, allow_redirects=False
                )
                if method == "GET":
                    assert response.status_code == 303, (method, path)
                    assert response.headers["location"] == "/staff/login"
                else:
                    assert response.status_code == 401, (method, path)
                    assert "Please sign in again" in response.text


def test_require_role_refuses_a_weaker_role(engine):
    add_user(engine, "viewer@union.example", "viewer", PASSWORD)
    add_user(engine, "organiser@union.example", "organiser", PASSWORD)

    def organiser_only(app):
        staff = app.state.staff

        organiser = Depends(staff.require("organiser"))

        @app.get("/staff/test-organiser")
        def only_organisers(user=organiser):
            return {"email": user.email}

    with StaffSite(engine, extra_routes=organiser_only) as site:
        viewer = requests.Session()
        site.login(viewer, "viewer@union.example")
        refused = viewer.get(f"{site.base}/staff/test-organiser", allow_redirects=False)
        assert refused.status_code == 403 and "needs the organiser role" in refused.text
        assert viewer.get(f"{site.base}/staff/", allow_redirects=False).status_code == 200
        organiser = requests.Session()
        site.login(organiser, "organiser@union.example")
        assert organiser.get(f"{site.base}/staff/test-organiser").json() == {
            "email": "organiser@union.example"
        }
        nobody = requests.get(f"{site.base}/staff/test-organiser", allow_redirects=False)
        assert nobody.status_code == 303


def test_logged_in_user_at_login_page_goes_to_dashboard(engine):
    add_user(engine, "viewer@union.example", "viewer", PASSWORD)
    with StaffSite(engine) as site:
        browser = requests.Session()
        site.login(browser, "viewer@union.example")
        again = browser.get(f"{site.base}/staff/login", allow_redirects=False)
        assert again.status_code == 303 and again.headers["location"] == "/staff/"
        home = browser.get(f"{site.base}/staff/")
        assert "No wave has been launched yet." in home.text


@pytest.mark.parametrize("hours", ["0", "-1", "abc", "1000"])
def test_session_hours_setting_checked(hours):
    from engine.errors import CampaignError
    from engine.settings import Settings

    with pytest.raises(CampaignError, match="CAMPAIGN_STAFF_SESSION_HOURS"):
        Settings.from_env({"CAMPAIGN_STAFF_SESSION_HOURS": hours})
