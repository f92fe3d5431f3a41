"""Members for staff: found by number, name or email; one member's page with their letters, and
the button that exports everything held about them (a subject access request).

Looking is for every role; the export hands over a member's whole record, so it needs the staff
role, a form with its CSRF field (never a link a crawler or a prefetch could follow) and leaves
an audit event naming who took it.
"""

from __future__ import annotations

import json

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from engine.errors import CampaignError
from engine.members.rights import export_member
from engine.reports.members import FOUND_AT_MOST, find_members, member_overview
from engine.web.accounts import StaffUser
from engine.web.staff import StaffPages


def add_routes(pages: StaffPages) -> None:
    router = pages.router
    viewer = Depends(pages.require("viewer"))
    staff = Depends(pages.require("staff"))

    @router.get("/members", response_class=HTMLResponse)
    def members(request: Request, q: str = "", user: StaffUser = viewer) -> HTMLResponse:
        found = find_members(pages.engine, q) if q.strip() else None
        return pages.page(
            "staff_members.html",
            user=user,
            csrf=pages.csrf(request),
            query=q[:120],
            found=found,
            at_most=FOUND_AT_MOST,
        )

    def member_page(request: Request, user: StaffUser, membership_no: str) -> HTMLResponse:
        try:
            overview = member_overview(pages.engine, membership_no)
        except CampaignError as exc:
            return pages.page(
                "message.html", 404, heading="No such member", text=f"{str(exc)[:1].upper()}{str(exc)[1:]}."
            )
        return pages.page(
            "staff_member.html",
            user=user,
            csrf=pages.csrf(request),
            overview=overview,
            may_export=user.may("staff"),
        )

    @router.get("/members/{membership_no}", response_class=HTMLResponse)
    def member(request: Request, membership_no: str, user: StaffUser = viewer) -> HTMLResponse:
        return member_page(request, user, membership_no)

    @router.post("/members/{membership_no}/export")
    def export(
        request: Request, membership_no: str, csrf: str = Form(""), user: StaffUser = staff
    ) -> Response:
        pages.check_csrf(request, csrf)
        try:
            data = export_member(pages.engine, membership_no, by=user.email)
        except CampaignError:
            return member_page(request, user, membership_no)
        body = json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"
        # The number names the file; it is the member's own and safe in a header (ASCII only).
        name = "".join(c for c in data["member"]["membership_no"] if c.isalnum() or c in "-_")[:40]
        return Response(
            body.encode(),
            media_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="member-{name or "export"}.json"',
                "Cache-Control": "no-store",
            },
        )
