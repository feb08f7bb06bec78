"""The console's pages, one module per area, over one shared base (``base``).

``session`` sign-in/out and language; ``board`` the live board; ``message`` a message, its
audio, CSV and CAP; ``send`` the send form; ``archive`` the archive; ``bins`` BINs and members;
``audit`` the audit chain's state and latest entries (admins).
Handlers parse the request, call the feature that owns the data, and render: no SQL here.
"""

from __future__ import annotations

from ivr.web.pages.admin import AdminPages
from ivr.web.pages.archive import ArchivePages
from ivr.web.pages.audit import AuditPages
from ivr.web.pages.base import BodyTooLarge, PageBase, PageError, SignInRequired, safe_target
from ivr.web.pages.bins import BinPages
from ivr.web.pages.board import BoardPages
from ivr.web.pages.control import ControlPages
from ivr.web.pages.message import MessagePages
from ivr.web.pages.send import SendPages
from ivr.web.pages.session import SessionPages

__all__ = ["BodyTooLarge", "PageBase", "PageError", "Pages", "SignInRequired", "safe_target"]


class Pages(SessionPages, BoardPages, MessagePages, SendPages, ArchivePages, BinPages, AuditPages, ControlPages,
            AdminPages):
    """Every request handler of the console, bound to one console (one template environment)."""
