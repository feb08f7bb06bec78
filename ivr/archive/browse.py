"""The console's archive page: search by words or list by filters, within the viewer's BINs.

A search (``Archive.search``, audited by the archive) is narrowed by the same filters a list
takes; either way only the BINs the viewer sees are kept. Drills ("Testbericht BIN-foon") are listed
too, each marked ``drill`` so the page shows it as a test, never as a police message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from ivr.archive.store import Archive, ArchiveEntry
from ivr.directory.store import bins_in_scope
from storage.db import session_scope
from storage.models import Message
from ivr.domain.vocabulary import Urgency

if TYPE_CHECKING:
    from ivr.directory.accounts import Viewer

#: At most this many messages on the page.
PAGE_LIMIT = 500


@dataclass(frozen=True)
class BrowsedEntry(ArchiveEntry):
    """An archive entry as the page lists it: ``drill`` marks a test message."""

    drill: bool = False


def browse(archive: Archive, viewer: Viewer, words: str, bin_number: int | None, zone: str | None,
           since: dt.datetime | None, until: dt.datetime | None, urgency: Urgency | None) -> list[BrowsedEntry]:
    """Messages holding ``words`` (or all, when empty) that match every filter and the viewer's scope (blocking).

    ``since`` <= created < ``until``; raises ``ArchiveError`` as the archive does.
    """
    if words:
        found = archive.search([words], viewer.actor, limit=PAGE_LIMIT)
        entries = [e for e in found if
                   (bin_number is None or e.bin_number == bin_number)
                   and (not zone or e.zone_code == zone)
                   and (since is None or e.created_at >= since)
                   and (until is None or e.created_at < until)
                   and (urgency is None or e.urgency is urgency)]
    else:
        entries = archive.list(bin_number, zone or None, since, until, urgency, limit=PAGE_LIMIT)
    with session_scope(archive.engine) as s:
        visible = {b.number for b in bins_in_scope(s, viewer)}
        shown = [e for e in entries if e.bin_number in visible]
        drills = set(s.scalars(select(Message.id).where(Message.id.in_([e.message_id for e in shown]),
                                                        Message.drill.is_(True)))) if shown else set()
    return [BrowsedEntry(**e.__dict__, drill=e.message_id in drills) for e in shown]
