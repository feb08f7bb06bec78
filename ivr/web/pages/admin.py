"""The admin's tools (admins only): persons, zones."""

from __future__ import annotations

from ivr.web.pages.base import PageBase


class AdminPages(PageBase):
    """Persons and zones, for admins."""
