"""Campaign control: stop, re-notify, retract, cancel a "later" message; drills."""

from __future__ import annotations

from ivr.web.pages.base import PageBase


class ControlPages(PageBase):
    """The buttons that steer a message's delivery, and a BIN's drills."""
