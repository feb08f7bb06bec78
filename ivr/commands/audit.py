"""``binfoon audit verify``: check the audit chain and its anchors; anchor the head when intact.

Exit status 0 when intact, 1 with the first bad entry and why (and how many problems in all);
the key file is never created here (verifying needs the one the rows were written with).
"""

from __future__ import annotations

import argparse
import sys

from ivr.config import Settings
from storage import audit
from storage.db import open_database, session_scope


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``audit`` commands."""
    p = sub.add_parser("audit", help="the audit log")
    area = p.add_subparsers(dest="audit_cmd", required=True)
    verify = area.add_parser("verify", help="check every entry's HMAC chain and the anchors; exit 1 if broken")
    verify.add_argument("--all", action="store_true", help="list every problem, not just the first")
    verify.set_defaults(func=cmd_verify)


def use_settings(settings: Settings) -> None:
    """Tell the audit log which key and anchors files belong to the configured database."""
    audit.configure(settings.resolved_database_url, settings.data_dir, settings.audit_key_file,
                    settings.audit_anchor_file)


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Verify; print a one-line verdict (and the problems); anchor the head when the chain is intact."""
    engine = open_database(settings.resolved_database_url)
    use_settings(settings)
    with session_scope(engine) as s:
        result = audit.check(s)
    if not result.intact:
        first = result.first
        assert first is not None
        print(f"binfoon: audit log BROKEN: {first}", file=sys.stderr)
        for problem in result.problems[1:] if args.all else []:
            print(f"  {problem}", file=sys.stderr)
        if len(result.problems) > 1 and not args.all:
            print(f"  ({len(result.problems) - 1} more problem(s); --all lists them)", file=sys.stderr)
        return 1
    with session_scope(engine) as s:
        anchored = audit.anchor(s)
    keyed = f"{result.keyed_rows} keyed" if result.has_key else "no key file: plain hashes only"
    head = f"head entry {result.head_id}" if result.head_id is not None else "empty"
    where = f"; anchored in {result.anchor_file}" if anchored is not None else ""
    print(f"audit log intact: {result.rows} entries ({keyed}), {head}, {result.anchors} earlier anchor(s){where}")
    return 0
