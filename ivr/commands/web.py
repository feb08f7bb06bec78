"""``binfoon web user add|list|password|disable``: accounts of the web console.

Passwords are read from a file or standard input, never from the command line (like PINs).
``ivr.directory.accounts`` is imported when a command runs: it hashes a password on import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy.orm import Session

from ivr.commands.common import CommandError, actor
from ivr.config import Settings
from storage.db import open_database, session_scope
from storage.models import WebAccount
from ivr.domain.vocabulary import WebRole


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``web`` commands."""
    web = sub.add_parser("web", help="the web console").add_subparsers(dest="object", required=True)
    users = web.add_parser("user", help="web console accounts").add_subparsers(dest="action", required=True)
    p = users.add_parser("add", help="give a person of the directory (police, coordinator, admin) a web account")
    p.add_argument("--person", type=int, required=True, help="person id (see `binfoon person add`)")
    p.add_argument("--username", help="sign-in name (default: from the person's name, e.g. inspecteur.peeters)")
    p.add_argument("--role", choices=[r.value for r in WebRole],
                   help="must match the person's roles (default: the strongest of them)")
    _password_args(p)
    p.set_defaults(func=cmd_user_add)
    p = users.add_parser("password", help="set a new password (signs the account out everywhere)")
    p.add_argument("username")
    _password_args(p)
    p.set_defaults(func=cmd_user_password)
    p = users.add_parser("disable", help="disable an account (signs it out everywhere)")
    p.add_argument("username")
    p.set_defaults(func=cmd_user_disable)
    users.add_parser("list", help="list the accounts").set_defaults(func=cmd_user_list)


def _password_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--password-file", type=Path, help="read the password from this file (first line)")
    source.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CommandError(f"cannot read the password file: {exc.strerror}") from None
        return lines[0] if lines else ""
    if sys.stdin.isatty():  # typed by a person: not echoed on the screen
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    """Create an account; its scope follows the person's roles in the directory."""
    from ivr.directory.accounts import AccountError, add_account

    password = _read_password(args)
    engine = open_database(settings.resolved_database_url)
    try:
        with session_scope(engine) as s:
            account = add_account(s, args.person, args.username, password, actor(),
                                  WebRole(args.role) if args.role else None)
            username, role = account.username, account.role.value
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    print(f"web account {username!r} ({role}) added for person {args.person}; "
          f"sign in at http://{settings.web_host}:{settings.web_port}/ while `binfoon serve` runs")
    return 0


def _account(s: Session, username: str) -> WebAccount:
    from ivr.directory.accounts import account_by_username

    account = account_by_username(s, username)
    if account is None:
        raise CommandError(f"no web account {username!r}")
    return account


def cmd_user_password(settings: Settings, args: argparse.Namespace) -> int:
    """A new password; sessions signed in with the old one end."""
    from ivr.directory.accounts import MIN_PASSWORD_CHARS, set_password

    password = _read_password(args)
    if len(password) < MIN_PASSWORD_CHARS:
        raise CommandError(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        set_password(s, _account(s, args.username), password, actor())
    print(f"password of {args.username!r} changed")
    return 0


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    """Disable an account; its sessions end."""
    from ivr.directory.accounts import disable_account

    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        disable_account(s, _account(s, args.username), actor())
    print(f"web account {args.username!r} disabled")
    return 0


def cmd_user_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print the accounts."""
    from ivr.directory.accounts import accounts

    engine = open_database(settings.resolved_database_url)
    with session_scope(engine) as s:
        for account in accounts(s):
            state = "active" if account.active else "disabled"
            print(f"{account.username:<30} {account.role.value:<12} person {account.person_id:<6} "
                  f"{account.person.name}  ({state})")
    return 0
