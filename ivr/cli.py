"""The ``binfoon`` command line: one sub-command module per area, wired here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ivr.commands.common import CommandError
from ivr.config import ConfigError, Settings, load_settings

__all__ = ["CommandError", "build_parser", "main"]  # CommandError: still importable from here (ivr.lab)

#: Exit statuses: a user error (bad value, unknown BIN, refused change, unusable database or
#: configuration) is 1; a command typed wrong (argparse's usage error) is 2. Scripts tell them apart.
USER_ERROR = 1
USAGE_ERROR = 2

#: The areas whose commands work on the directory database: it must exist before they run.
DATABASE_AREAS = frozenset({"zone", "bin", "person", "members", "message", "campaign", "archive", "report",
                            "audit", "web", "serve"})


def version() -> str:
    """The installed distribution's version (the source tree's when it is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("binfoon")
    except PackageNotFoundError:
        return "unknown (not installed)"


def check_database(settings: Settings, *, init: bool = False) -> None:
    """Refuse (one line, ``DatabaseUnavailable``) a database that cannot be opened, before a command
    touches it. Nothing is created or written here.

    An explicit ``database_url`` naming a SQLite file that does not exist is refused (a mistyped
    path would become an empty database that knows no BIN); ``db upgrade`` or ``serve --init``
    create it. The default file in ``data_dir`` is made on first use, with a warning saying where."""
    from storage.db import check_reachable

    check_reachable(settings.resolved_database_url, create=init or not settings.database_url)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each area module adds its own sub-commands."""
    from ivr.commands import archive as archive_cmd
    from ivr.commands import asterisk as asterisk_cmd
    from ivr.commands import backup as backup_cmd
    from ivr.commands import campaign as campaign_cmd
    from ivr.commands import db as db_cmd
    from ivr.commands import deploy as deploy_cmd
    from ivr.commands import directory as directory_cmd
    from ivr.commands import message as message_cmd
    from ivr.commands import prompts as prompts_cmd
    from ivr.commands import report as report_cmd
    from ivr.commands import serve as serve_cmd
    from ivr.commands import speech as speech_cmd
    from ivr.commands import web as web_cmd
    from ivr.lab import bench as bench_cmd
    from ivr.lab import demo as demo_cmd

    parser = argparse.ArgumentParser(prog="binfoon", description="BINfoon telephone chain")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    parser.add_argument("--version", action="version", version=f"binfoon {version()}")
    sub = parser.add_subparsers(dest="area", required=True)
    from ivr.commands import config_cmd
    from ivr.commands import health as health_cmd

    for module in (asterisk_cmd, directory_cmd, db_cmd, prompts_cmd, message_cmd, campaign_cmd, serve_cmd, demo_cmd, bench_cmd,
                   speech_cmd, archive_cmd, report_cmd, web_cmd, backup_cmd, config_cmd, health_cmd):
        module.register(sub)
    deploy_cmd.register(sub)
    from ivr.commands import audit as audit_cmd

    audit_cmd.register(sub)
    from ivr.commands import kannel as kannel_cmd

    kannel_cmd.register(sub)
    from ivr.commands import edge as edge_cmd

    edge_cmd.register(sub)
    from ivr.lab import cluster_cmd  # a farm on this machine: the lab's, like the demo and the bench

    cluster_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``binfoon`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Libraries (alembic, panoramisk) speak only when something is wrong; ours tells progress.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("ivr").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    from sqlalchemy.exc import OperationalError

    from storage.db import DatabaseUnavailable, shown_url

    settings: Settings | None = None
    try:
        if getattr(args, "needs_no_settings", False):
            return int(args.func(None, args) or 0)  # `config check` reports a bad configuration itself
        settings = load_settings()
        if args.area in DATABASE_AREAS:
            check_database(settings, init=bool(getattr(args, "init", False)))
        from ivr.commands.audit import use_settings as audit_files

        audit_files(settings)  # every command's audit rows are keyed with the configured key
        return int(args.func(settings, args) or 0)
    except (CommandError, ConfigError, DatabaseUnavailable) as exc:
        print(f"binfoon: {exc}", file=sys.stderr)
        return USER_ERROR
    except OperationalError as exc:
        # The database went away or refused a statement mid-command: one line, not a traceback.
        where = shown_url(settings.resolved_database_url) if settings else "the database"
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        print(f"binfoon: database {where}: {reason}", file=sys.stderr)
        return USER_ERROR
