"""The console's archive page: search by words or list by filters, within the viewer's BINs.

A search (``Archive.search``, audited by the archive) is narrowed by the same filters a list
takes; either way only the BINs the viewer sees are kept.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ivr.archive.store import Archive, ArchiveEntry
from ivr.directory.store import bins_in_scope
from storage.db import session_scope
from ivr.domain.vocabulary import Urgency

if TYPE_CHECKING:
    from ivr.directory.accounts import Viewer

#: At most this many messages on the page.
PAGE_LIMIT = 500


def browse(archive: Archive, viewer: Viewer, words: str, bin_number: int | None, zone: str | None,
           since: dt.datetime | None, until: dt.datetime | None, urgency: Urgency | None) -> list[ArchiveEntry]:
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
    return [e for e in entries if e.bin_number in visible]
