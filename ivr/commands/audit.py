"""``binfoon audit verify``: check the audit chain and its anchors; anchor the head when intact.
``binfoon audit search``: find entries by actor, action, subject, time and text.

Exit status 0 when intact, 1 with the first bad entry and why (and how many problems in all);
the key file is never created here (verifying needs the one the rows were written with). A search
is itself audited (``audit.searched``, with its filters) before anything is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ivr.commands.common import CommandError, actor, parse_when, positive_int
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
    search = area.add_parser("search", help="find entries (newest first); the search itself is audited",
                             description="Filters combine; ACTOR, ACTION and SUBJECT match exactly, or as a "
                                         "prefix when they end with '*' (e.g. --action 'person.*').")
    search.add_argument("--actor", help="who acted, e.g. cli:root, web:person:7")
    search.add_argument("--action", help="what was done, e.g. person.deactivated or 'zone.*'")
    search.add_argument("--subject", help="what it was done to, e.g. person:7, zone:5415")
    search.add_argument("--since", help="from this local date or time (2026-11-23, 2026-11-23T14:00)")
    search.add_argument("--until", help="up to this local date (inclusive) or time (exclusive)")
    search.add_argument("--text", help="words found in the actor, action, subject or details (any case)")
    search.add_argument("--before", type=positive_int, metavar="ID", help="only entries older than entry ID (paging)")
    search.add_argument("--limit", type=positive_int, default=50, help="at most this many entries (default 50)")
    search.add_argument("--json", action="store_true", help="one JSON array of the entries")
    search.set_defaults(func=cmd_search)


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


#: The longest filter value taken (the columns are 200 characters at most).
FILTER_MAX_CHARS = 200


def query_from_args(settings: Settings, args: argparse.Namespace) -> audit.AuditQuery:
    """The search the arguments ask for, or a ``CommandError`` saying what is wrong."""
    for name in ("actor", "action", "subject", "text"):
        value = getattr(args, name)
        if value is not None and (not value.strip() or len(value) > FILTER_MAX_CHARS):
            raise CommandError(f"--{name}: give 1 to {FILTER_MAX_CHARS} characters")
    since = parse_when(args.since, settings, end_of_day=False) if args.since else None
    until = parse_when(args.until, settings, end_of_day=True) if args.until else None
    if since is not None and until is not None and until <= since:
        raise CommandError("--until is not after --since")
    if args.limit > audit.SEARCH_MAX:
        raise CommandError(f"--limit: at most {audit.SEARCH_MAX} (page on with --before)")
    return audit.AuditQuery(actor=args.actor, action=args.action, subject=args.subject, since=since, until=until,
                            text=args.text, before_id=args.before, limit=args.limit)


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    """Print the matching entries, newest first (``--json``: as one array); audited first."""
    query = query_from_args(settings, args)
    engine = open_database(settings.resolved_database_url)
    use_settings(settings)
    with session_scope(engine) as s:
        own = audit.record(s, actor(), "audit.searched", "audit_log", via="cli", filters=query.filters()).id
    # The search's own row is not among what it finds.
    query = dataclasses.replace(query, before_id=min(query.before_id or own, own))
    with session_scope(engine) as s:
        entries = [audit.as_dict(e) for e in audit.search(s, query)]
    if args.json:
        print(json.dumps(entries, ensure_ascii=False, indent=1))
        return 0
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in (e["details"] or {}).items())
        print(f"{e['id']:>7}  {e['at'][:19]}  {e['actor']:<20} {e['action']:<28} {e['subject']:<16} {details}")
    if not entries:
        print("no entries match", file=sys.stderr)
    elif len(entries) == query.limit:
        print(f"(more may match: --before {entries[-1]['id']} shows older ones)", file=sys.stderr)
    return 0
