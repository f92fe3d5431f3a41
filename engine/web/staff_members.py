"""One member's page for staff, with the button that exports everything held about them."""

from __future__ import annotations

from engine.web.staff import StaffPages


def add_routes(pages: StaffPages) -> None:
    """Adds this module's pages to `pages.router` (each with `pages.require(role)`)."""
    pass
