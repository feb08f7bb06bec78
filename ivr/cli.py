"""The ``binfoon`` command line: one sub-command module per area, wired here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ivr.commands.common import CommandError
from ivr.config import ConfigError, load_settings

__all__ = ["CommandError", "build_parser", "main"]  # CommandError: still importable from here (ivr.lab)


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
    sub = parser.add_subparsers(dest="area", required=True)
    for module in (asterisk_cmd, directory_cmd, db_cmd, prompts_cmd, message_cmd, campaign_cmd, serve_cmd, demo_cmd, bench_cmd,
                   speech_cmd, archive_cmd, report_cmd, web_cmd, backup_cmd):
        module.register(sub)
    deploy_cmd.register(sub)
    from ivr.commands import audit as audit_cmd

    audit_cmd.register(sub)
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
    try:
        settings = load_settings()
        from ivr.commands.audit import use_settings as audit_files

        audit_files(settings)  # every command's audit rows are keyed with the configured key
        return int(args.func(settings, args) or 0)
    except (CommandError, ConfigError) as exc:
        print(f"binfoon: {exc}", file=sys.stderr)
        return 2
