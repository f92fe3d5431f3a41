"""A wave's letters (filtered by state, region, employer and outcome), and each employer's
and MP's page with their letters, replies and response times."""

from __future__ import annotations

from engine.web.staff import StaffPages


def add_routes(pages: StaffPages) -> None:
    """Adds this module's pages to `pages.router` (each with `pages.require(role)`)."""
    pass
