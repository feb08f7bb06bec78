"""``binfoon kannel config [--output FILE] [--force]``: Kannel's configuration for the operator's SMPP account.

What it reads (settings): ``smpp_host``, ``smpp_port``, ``smpp_system_id``, ``smpp_password_file`` (the
operator's password: must exist, 0600), ``sms_username`` and ``sms_password_file`` (the sendsms account
the service uses), ``sms_sendsms_url`` (smsbox's port; empty: 13013), ``sms_callback_port`` (where
delivery reports and replies go) and the copies key (its signature is the reply URL's token).

What it makes when missing, 0600 (as root: owned by the owner of the folder they are in, the
service's user for ``data_dir``): the sendsms password file (random; the service and Kannel must share
it, and a file that does not exist yet was never given to either), the copies key, and
``<data_dir>/kannel-admin.secret`` (bearerbox's admin password). It never changes a secret that exists.

The configuration holds passwords: it is written 0600 (as root: owned by the ``kannel`` user the Debian
boxes run as), whole or not at all, and replaces an existing file only with ``--force``. ``--output -``
prints it instead (on purpose only: it shows the passwords). Then the Debian package's boxes need
``START_SMSBOX=1`` in /etc/default/kannel and their spool folder; the command says so.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import sys
import tempfile
from pathlib import Path

from ivr.commands.common import CommandError, refuse_overwrite
from ivr.config import Settings
from ivr.copies.kannel import (
    ADMIN_PORT,
    LOG_DIR,
    SMSBOX_PORT,
    SPOOL_DIR,
    KannelConfigError,
    kannel_config,
    mo_token,
    read_secret,
)
from ivr.copies.tokens import CopiesKeyError, load_copies_key

#: Where Debian's Kannel package reads its configuration.
DEBIAN_CONFIG = Path("/etc/kannel/kannel.conf")
#: The user Debian's Kannel boxes run as.
KANNEL_USER = "kannel"
ADMIN_SECRET_FILE = "kannel-admin.secret"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``kannel`` commands."""
    actions = sub.add_parser("kannel", help="the SMS gateway (Kannel) for SMS copies") \
        .add_subparsers(dest="action", required=True)
    p = actions.add_parser("config", help="write Kannel's configuration for the operator's SMPP account "
                                          "(smpp_* and sms_* settings)")
    p.add_argument("--output", default=str(DEBIAN_CONFIG), metavar="FILE",
                   help=f"where to write it (default: {DEBIAN_CONFIG}; '-': print it, passwords included)")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    p.add_argument("--spool-dir", type=Path, default=SPOOL_DIR,
                   help=f"Kannel's queue and pending delivery reports (default: {SPOOL_DIR})")
    p.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"Kannel's logs (default: {LOG_DIR})")
    p.add_argument("--admin-port", type=int, default=ADMIN_PORT, help=f"bearerbox's admin port (default: {ADMIN_PORT})")
    p.add_argument("--smsbox-port", type=int, default=SMSBOX_PORT,
                   help=f"the port smsbox connects to bearerbox on (default: {SMSBOX_PORT})")
    p.set_defaults(func=cmd_config)


def _give_to_folder_owner(path: Path) -> str:
    """As root, make ``path`` its folder owner's (the service's user for ``data_dir``); the owner's name."""
    info = path.parent.stat()
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid)
    try:
        return pwd.getpwuid(path.stat().st_uid).pw_name
    except KeyError:
        return str(path.stat().st_uid)


def _secret(setting: str, path: Path, made: list[str]) -> str:
    """The secret in ``path``, made there (random hex, 0600) when the file does not exist."""
    if not path.exists():
        if not path.parent.is_dir():
            raise CommandError(f"{setting}: the folder {path.parent} does not exist")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # made in the meantime: that one counts
        else:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                # Hex: no character Kannel's configuration could take for anything but a password.
                out.write(secrets.token_hex(24) + "\n")
            made.append(f"{path} (0600, {_give_to_folder_owner(path)}'s)")
    try:
        return read_secret(setting, str(path))
    except KannelConfigError as exc:
        raise CommandError(str(exc)) from None


def _write(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` whole or not at all, 0600 (as root: the Kannel user's); who owns it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        owner = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            try:
                kannel = pwd.getpwnam(KANNEL_USER)
            except KeyError:
                pass
            else:
                os.chown(temporary, kannel.pw_uid, 0)
                owner = KANNEL_USER
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return owner


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    """Check the settings, read or make the secrets, and write (or print) the configuration."""
    missing = [name for name in ("smpp_host", "smpp_system_id", "smpp_password_file", "sms_password_file")
               if not getattr(settings, name)]
    if missing:
        raise CommandError(f"set {', '.join(missing)} first (binfoon.toml): the operator's SMPP account and the "
                           "file of the sendsms password (made here when it does not exist)")
    if settings.sms_callback_port == 0:
        raise CommandError("sms_callback_port is 0 (off): Kannel needs the service's listener for delivery "
                           "reports and replies")
    output = None if args.output == "-" else Path(args.output)
    if output is not None:
        if output.is_dir() or not output.parent.is_dir():
            raise CommandError(f"--output {output}: not a file in an existing folder")
        refuse_overwrite(output, args.force)

    made: list[str] = []
    try:
        # The operator's: never made here.
        smpp_password = read_secret("smpp_password_file", settings.smpp_password_file)
    except KannelConfigError as exc:
        raise CommandError(f"{exc} (the password the operator gave for the SMPP account, in a 0600 file)") from None
    password = _secret("sms_password_file", Path(settings.sms_password_file), made)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_password = _secret("kannel admin password", settings.data_dir / ADMIN_SECRET_FILE, made)
    key_path = settings.copies_key_path
    key_existed = key_path.exists()
    try:
        key = load_copies_key(key_path)
    except CopiesKeyError as exc:
        raise CommandError(str(exc)) from None
    if not key_existed:
        made.append(f"{key_path} (0600, {_give_to_folder_owner(key_path)}'s)")
    try:
        text = kannel_config(settings, password, smpp_password, settings.sms_callback_port, mo_token(key),
                             admin_password=admin_password, spool_dir=args.spool_dir, log_dir=args.log_dir,
                             admin_port=args.admin_port, smsbox_port=args.smsbox_port)
    except KannelConfigError as exc:
        raise CommandError(f"kannel configuration: {exc}") from None

    for line in made:
        print(f"made {line}", file=sys.stderr)
    if output is None:
        sys.stdout.write(text)
        return 0
    owner = _write(output, text)
    print(f"wrote {output} (0600, {owner}'s): SMPP {settings.smpp_system_id}@{settings.smpp_host}:{settings.smpp_port},"
          f" reports and replies to 127.0.0.1:{settings.sms_callback_port}")
    print("next, as root:\n"
          f"  mkdir -p {args.spool_dir / 'dlr'} && chown -R {KANNEL_USER} {args.spool_dir}\n"
          "  in /etc/default/kannel: START_SMSBOX=1 (and START_WAPBOX= empty: BINfoon needs no WAP)\n"
          "  systemctl restart kannel")
    if not settings.sms_sendsms_url:
        print("  and in binfoon.toml: sms_sendsms_url = \"http://127.0.0.1:13013/cgi-bin/sendsms\"")
    return 0
