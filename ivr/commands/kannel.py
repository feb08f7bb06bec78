"""``binfoon kannel config [--output FILE] [--force]``: Kannel's configuration for the operator's SMPP account.

What it reads (settings): ``smpp_host``, ``smpp_port``, ``smpp_system_id``, ``smpp_password_file`` (the
operator's password: must exist, 0600), ``sms_username`` and ``sms_password_file`` (the sendsms account
the service uses), ``sms_sendsms_url`` (smsbox's port; empty: 13013), ``sms_callback_port`` (where
delivery reports and replies go), ``service_user`` and the copies key (its signature is the reply URL's
token).

What it makes when missing, 0600 (as root: owned by the owner of the folder they are in, the
service's user for ``data_dir``): the sendsms password file (random; the service and Kannel must share
it, and a file that does not exist yet was never given to either), the copies key, and in ``data_dir``
``kannel-admin.secret`` and ``kannel-status.secret`` (bearerbox's admin and status passwords). It never
changes a secret that exists.

The configuration holds passwords: it is written 0600 (as root: owned by the ``kannel`` user the Debian
boxes run as), whole or not at all, and replaces an existing file only with ``--force``. ``--output -``
prints it instead (on purpose only: it shows the passwords) and touches nothing else. Written to a file,
it also prepares what Kannel keeps, which holds members' numbers and texts (as root, owned by
``kannel``): the spool folder 0700, the log folder 0750 ``kannel:adm`` with the two logs made 0640; the
systemd drop-in ``UMask=0077`` for the boxes (when systemd's folder is there); and an nftables table
that keeps other local users off Kannel's ports (written, never loaded here: the command says how).

Every file is made without following a symbolic link and given its owner through the open file, before
it is closed: a folder's owner who swaps a file for a link meanwhile cannot make root chown something else.
"""

from __future__ import annotations

import argparse
import errno
import grp
import os
import pwd
import secrets
import stat
import sys
import tempfile
from pathlib import Path

from ivr.commands.common import CommandError, refuse_overwrite
from ivr.config import Settings
from ivr.copies.kannel import KannelConfigError, mo_token, read_secret
from ivr.copies.kannel_config import (
    ADMIN_PORT,
    KANNEL_USER,
    LOG_DIR,
    SMSBOX_PORT,
    SPOOL_DIR,
    kannel_config,
    nftables_rules,
    sendsms_port,
)
from ivr.copies.tokens import CopiesKeyError, load_copies_key

#: Where Debian's Kannel package reads its configuration.
DEBIAN_CONFIG = Path("/etc/kannel/kannel.conf")
#: The boxes' umask, as a drop-in for the unit systemd makes of Debian's init script.
SYSTEMD_DROPIN = Path("/etc/systemd/system/kannel.service.d/binfoon.conf")
#: The firewall rules; /etc/nftables.conf includes them with ``include "/etc/nftables.d/*.nft"``.
NFT_FILE = Path("/etc/nftables.d/binfoon-kannel.nft")
ADMIN_SECRET_FILE = "kannel-admin.secret"
STATUS_SECRET_FILE = "kannel-status.secret"
#: The group that reads the logs on Debian (logrotate's ``create 640 kannel adm`` for Kannel's too).
LOG_GROUP = "adm"
#: The box logs the configuration names (``ivr.copies.kannel_config.gateway_groups``).
LOG_FILES = ("bearerbox.log", "smsbox.log")
DROPIN_TEXT = """\
# BINfoon (binfoon kannel config): Kannel's queue, delivery reports and logs hold members' numbers and
# texts; what the boxes make is theirs alone.
[Service]
UMask=0077
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``kannel`` commands."""
    actions = sub.add_parser("kannel", help="the SMS gateway (Kannel) for SMS copies") \
        .add_subparsers(dest="action", required=True)
    p = actions.add_parser("config", help="write Kannel's configuration for the operator's SMPP account "
                                          "(smpp_* and sms_* settings), its folders and firewall rules")
    p.add_argument("--output", default=str(DEBIAN_CONFIG), metavar="FILE",
                   help=f"where to write it (default: {DEBIAN_CONFIG}; '-': print it, passwords included, "
                        "and do nothing else)")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    p.add_argument("--spool-dir", type=Path, default=SPOOL_DIR,
                   help=f"Kannel's queue and pending delivery reports (default: {SPOOL_DIR})")
    p.add_argument("--log-dir", type=Path, default=LOG_DIR, help=f"Kannel's logs (default: {LOG_DIR})")
    p.add_argument("--admin-port", type=int, default=ADMIN_PORT, help=f"bearerbox's admin port (default: {ADMIN_PORT})")
    p.add_argument("--smsbox-port", type=int, default=SMSBOX_PORT,
                   help=f"the port smsbox connects to bearerbox on (default: {SMSBOX_PORT})")
    p.add_argument("--systemd-dropin", type=Path, default=SYSTEMD_DROPIN, metavar="FILE",
                   help=f"the boxes' UMask=0077 (default: {SYSTEMD_DROPIN}; written when its systemd folder exists)")
    p.add_argument("--nft-file", type=Path, default=NFT_FILE, metavar="FILE",
                   help=f"the nftables rules that keep other users off Kannel's ports (default: {NFT_FILE})")
    p.add_argument("--service-user", default=None,
                   help="the user the service sends SMS as (default: the service_user setting)")
    p.set_defaults(func=cmd_config)


def _folder_owner(path: Path) -> tuple[int, int] | None:
    """As root, (uid, gid) of ``path``'s folder: who a secret made there is given to. ``None``: not root."""
    if os.geteuid() != 0:
        return None
    info = path.parent.stat()
    return info.st_uid, info.st_gid


def _name_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _secret(setting: str, path: Path, made: list[str]) -> str:
    """The secret in ``path``, made there (random hex, 0600, the folder owner's) when it does not exist."""
    if not path.exists() and not path.is_symlink():
        if not path.parent.is_dir():
            raise CommandError(f"{setting}: the folder {path.parent} does not exist")
        owner = _folder_owner(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass  # made in the meantime: that one counts
        else:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                # Hex: no character Kannel's configuration could take for anything but a password.
                out.write(secrets.token_hex(24) + "\n")
                out.flush()
                if owner is not None:
                    os.fchown(out.fileno(), *owner)
                made.append(f"{path} (0600, {_name_of(os.fstat(out.fileno()).st_uid)}'s)")
    try:
        return read_secret(setting, str(path))
    except KannelConfigError as exc:
        raise CommandError(str(exc)) from None


def _kannel_ids() -> tuple[int, int, int] | None:
    """As root, (uid, primary gid, log group gid) of the ``kannel`` user; ``None``: not root.
    ``CommandError`` as root when there is no ``kannel`` user (Debian's package makes it)."""
    if os.geteuid() != 0:
        return None
    try:
        kannel = pwd.getpwnam(KANNEL_USER)
    except KeyError:
        raise CommandError(f"there is no {KANNEL_USER!r} user: install Debian's kannel package first") from None
    try:
        log_gid = grp.getgrnam(LOG_GROUP).gr_gid
    except KeyError:
        log_gid = kannel.pw_gid
    return kannel.pw_uid, kannel.pw_gid, log_gid


def _open_own(path: Path, flags: int, mode: int, what: str) -> int:
    """``path`` opened without following a link (``flags`` added); ``CommandError`` saying what it is."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CommandError(f"{what} {path} is a symbolic link: remove it, Kannel's files are made here") from None
        raise CommandError(f"{what} {path}: {exc.strerror}") from None


def _settle(fd: int, path: Path, mode: int, owner: tuple[int, int] | None, kind: int) -> None:
    """Give the open ``fd`` its ``mode`` and ``owner``; ``CommandError`` when it is not a ``kind``
    (``stat.S_IFDIR``, ``stat.S_IFREG``) or is a file with other names (a hard link elsewhere)."""
    info = os.fstat(fd)
    if stat.S_IFMT(info.st_mode) != kind or (kind == stat.S_IFREG and info.st_nlink != 1):
        raise CommandError(f"{path} is not what Kannel's {'folder' if kind == stat.S_IFDIR else 'file'} should be: "
                           "remove it")
    os.fchmod(fd, mode)
    if owner is not None:
        os.fchown(fd, *owner)


def _folder(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    """``path`` as a folder with ``mode`` and ``owner`` (made when missing)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    fd = _open_own(path, os.O_RDONLY | os.O_DIRECTORY, 0, "the folder")
    try:
        _settle(fd, path, mode, owner, stat.S_IFDIR)
    finally:
        os.close(fd)


def _log_file(path: Path, owner: tuple[int, int] | None) -> None:
    """``path`` as a box log, 0640 (made empty when missing, left as it is otherwise)."""
    fd = _open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o640, "the log")
    try:
        _settle(fd, path, 0o640, owner, stat.S_IFREG)
    finally:
        os.close(fd)


def _write(path: Path, text: str, owner: tuple[int, int] | None, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` whole or not at all, with ``mode`` and ``owner`` given before it has its name."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), mode)
            if owner is not None:
                os.fchown(out.fileno(), *owner)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _prepare_kannel(args: argparse.Namespace, nft: str) -> list[str]:
    """Kannel's folders and logs, the systemd drop-in and the firewall rules; what was done, one line each."""
    ids = _kannel_ids()
    kannel = (ids[0], ids[1]) if ids else None
    logs = (ids[0], ids[2]) if ids else None
    owner = "kannel" if ids else _name_of(os.geteuid())
    done = []
    for folder in (args.spool_dir, args.spool_dir / "dlr"):
        _folder(folder, 0o700, kannel)
    done.append(f"{args.spool_dir} (0700, {owner}'s): Kannel's queue and pending delivery reports")
    _folder(args.log_dir, 0o750, logs)
    for name in LOG_FILES:
        _log_file(args.log_dir / name, logs)
    done.append(f"{args.log_dir} (0750, {owner}:{LOG_GROUP if ids else owner}) and its "
                f"{', '.join(LOG_FILES)} (0640)")
    root = (0, 0) if ids else None
    dropin: Path = args.systemd_dropin
    if dropin.parent.parent.is_dir():
        _folder(dropin.parent, 0o755, root)
        _write(dropin, DROPIN_TEXT, root, 0o644)
        done.append(f"{dropin}: the boxes make their files 0600 (UMask=0077)")
    nft_file: Path = args.nft_file
    if not nft_file.parent.is_dir():
        _folder(nft_file.parent, 0o755, root)
    _write(nft_file, nft, root, 0o644)
    done.append(f"{nft_file}: only the kannel user reaches bearerbox's ports, only it and {args.service_user} "
                "smsbox's sendsms port (not loaded)")
    if ids is None:
        done.append("not root: nothing was given to the kannel user; run this as root for the service")
    return done


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
    args.service_user = args.service_user or settings.service_user

    made: list[str] = []
    try:
        # The operator's: never made here.
        smpp_password = read_secret("smpp_password_file", settings.smpp_password_file)
    except KannelConfigError as exc:
        raise CommandError(f"{exc} (the password the operator gave for the SMPP account, in a 0600 file)") from None
    password = _secret("sms_password_file", Path(settings.sms_password_file), made)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_password = _secret("kannel admin password", settings.data_dir / ADMIN_SECRET_FILE, made)
    status_password = _secret("kannel status password", settings.data_dir / STATUS_SECRET_FILE, made)
    key_path = settings.copies_key_path
    key_existed = key_path.exists()
    try:
        key = load_copies_key(key_path, owner=_folder_owner(key_path))
    except CopiesKeyError as exc:
        raise CommandError(str(exc)) from None
    if not key_existed:
        made.append(f"{key_path} (0600, {_name_of(key_path.stat().st_uid)}'s)")
    try:
        text = kannel_config(settings, password, smpp_password, settings.sms_callback_port, mo_token(key),
                             admin_password=admin_password, status_password=status_password,
                             spool_dir=args.spool_dir, log_dir=args.log_dir,
                             admin_port=args.admin_port, smsbox_port=args.smsbox_port)
        nft = nftables_rules(args.admin_port, args.smsbox_port, sendsms_port(settings.sms_sendsms_url),
                             args.service_user)
    except KannelConfigError as exc:
        raise CommandError(f"kannel configuration: {exc}") from None

    for line in made:
        print(f"made {line}", file=sys.stderr)
    if output is None:
        sys.stdout.write(text)
        return 0
    # Kannel's folders first: a failure there (not root, a link where a folder should be) writes no configuration.
    prepared = _prepare_kannel(args, nft)
    ids = _kannel_ids()
    _write(output, text, (ids[0], 0) if ids else None)
    print(f"wrote {output} (0600, {KANNEL_USER if ids else _name_of(os.geteuid())}'s): SMPP "
          f"{settings.smpp_system_id}@{settings.smpp_host}:{settings.smpp_port}, reports and replies to "
          f"127.0.0.1:{settings.sms_callback_port}")
    for line in prepared:
        print(f"prepared {line}")
    print("next, as root:\n"
          "  in /etc/default/kannel: START_SMSBOX=1 (and START_WAPBOX= empty: BINfoon needs no WAP)\n"
          "  systemctl daemon-reload && systemctl restart kannel\n"
          f"  firewall: nft -f {args.nft_file}  (now), and at boot: the line include \"{args.nft_file.parent}/*.nft\" "
          "in /etc/nftables.conf, then systemctl enable nftables")
    if not settings.sms_sendsms_url:
        print("  and in binfoon.toml: sms_sendsms_url = \"http://127.0.0.1:13013/cgi-bin/sendsms\"")
    return 0
