"""``binfoon db upgrade``: bring the database schema up to date."""

from __future__ import annotations

import argparse

from ivr.config import Settings
from storage.db import current_revision, head_revision, upgrade


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``db`` commands."""
    parser = sub.add_parser("db", help="database schema")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(func=cmd_upgrade)


def cmd_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    """Run the migrations (idempotent)."""
    url = settings.resolved_database_url
    before = current_revision(url)
    upgrade(url)
    after = current_revision(url)
    print(f"database at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    assert after == head_revision()
    return 0
