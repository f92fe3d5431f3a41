"""The triage queue: replies waiting for staff to say which letter they answer, or that they
answer none; outcomes set or corrected; paper replies logged with a scan; mistaken matches undone."""

from __future__ import annotations

from engine.web.staff import StaffPages


def add_routes(pages: StaffPages) -> None:
    """Adds this module's pages to `pages.router` (each with `pages.require(role)`)."""
    pass
