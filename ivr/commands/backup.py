"""``binfoon backup DIR`` and ``binfoon restore DIR``: the database, the recordings and the keys.

The work is ``ivr.archive.backup``; this module only reads the arguments and prints the outcome.
Run both as the service's user (or root: restored files are given to the data folder's owner).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ivr.archive.backup import BackupError, backup, restore
from ivr.commands.common import CommandError
from ivr.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``backup`` and ``restore``."""
    p = sub.add_parser("backup", help="write a consistent backup: database, recordings and keys")
    p.add_argument("dir", type=Path, metavar="DIR", help="a new (or empty) folder for the backup")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore a backup into a fresh installation (checksums first)")
    p.add_argument("dir", type=Path, metavar="DIR", help="the folder `binfoon backup` wrote")
    p.add_argument("--replace", action="store_true",
                   help="overwrite an installation that already holds data (its recordings, keys, database)")
    p.set_defaults(func=cmd_restore)


def configured_secrets(settings: Settings) -> dict[str, Path]:
    """The secret files the settings name outside ``data_dir``, by their name in a backup."""
    return {"trunk.secret": Path(settings.trunk_secret_file)} if settings.trunk_secret_file else {}


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Back up the installation the settings describe into ``DIR``."""
    secrets = {name: path for name, path in configured_secrets(settings).items()
               if path.resolve().parent != settings.data_dir.resolve()}  # those in data_dir are taken anyway
    try:
        result = backup(settings.resolved_database_url, settings.data_dir, args.dir, secrets=secrets)
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    m = result.manifest
    print(f"backup written to {result.folder}: {m.database_kind} database (schema {m.revision}), "
          f"{m.recordings} recordings, {len(m.keys)} key files, {result.bytes} bytes in {result.seconds:.2f} s")
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Restore ``DIR`` into the installation the settings describe."""
    try:
        result = restore(args.dir, settings.resolved_database_url, settings.data_dir, replace=args.replace,
                         secret_paths=configured_secrets(settings))
    except BackupError as exc:
        raise CommandError(str(exc)) from None
    m = result.manifest
    print(f"restored the backup of {m.created_at}: {m.database_kind} database (schema {m.revision}), "
          f"{result.recordings} recordings, {len(result.keys)} key files, in {result.seconds:.2f} s")
    return 0
