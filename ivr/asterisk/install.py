"""Make Asterisk 22 available on any Debian machine.

Order of preference (``asterisk_mode = auto``): the system's own Asterisk when one is installed;
otherwise a minimal Debian root made with debootstrap from a suite that carries Asterisk 22
(Debian 12 and 13 have no ``asterisk`` package; ``testing`` does). The root lives under the
cache directory and is reused when present: it is only ever built once per machine.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ivr.config import Settings

log = logging.getLogger(__name__)

MIN_MAJOR_VERSION = 22
#: The account Debian's asterisk package creates inside the root.
ROOT_ASTERISK_USER = "asterisk"
#: System ids are drawn from here (Debian's range for dynamically allocated system accounts).
SYSTEM_IDS = range(100, 1000)
#: Written last into a finished root: a root without it is a broken, interrupted install.
COMPLETE_MARKER = ".binfoon-complete"


class AsteriskInstallError(RuntimeError):
    """Asterisk could not be made available; the message says what to do."""


@dataclass(frozen=True)
class AsteriskRuntime:
    """Where the Asterisk binary lives and how to run it.

    ``root`` is the chroot directory for an embedded install, or ``None`` for the system's own.
    Paths *inside* Asterisk's view of the file system are "inner" paths; ``host_path`` maps them.
    """

    root: Path | None
    version: str
    module_dir: str

    def host_path(self, inner: str | Path) -> Path:
        """The host path of a path as Asterisk sees it."""
        inner = Path(inner)
        if self.root is None:
            return inner
        return self.root / inner.relative_to("/")

    def inner_path(self, host: str | Path) -> str:
        """The path Asterisk sees for a host path under the root."""
        host = Path(host)
        if self.root is None:
            return str(host)
        return "/" + str(host.resolve().relative_to(self.root.resolve()))

    def asterisk_user(self) -> tuple[int, int]:
        """(uid, gid) of the unprivileged ``asterisk`` user Asterisk runs as (a system Asterisk:
        the package's ``asterisk`` user; without one, whoever runs us)."""
        if self.root is None:
            account = host_account(ROOT_ASTERISK_USER)
            return (account.uid, account.gid) if account is not None else (os.getuid(), os.getgid())
        passwd = self.host_path("/etc/passwd").read_text(encoding="utf-8")
        found = _ids_in(passwd, ROOT_ASTERISK_USER)
        if found is None:
            raise AsteriskInstallError("no 'asterisk' user in the Asterisk root's /etc/passwd")
        return found


def _version_of(command: list[str]) -> str:
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"Asterisk (\d+)\.(\d+)\S*", out.stdout + out.stderr)
    if not match:
        raise AsteriskInstallError(f"cannot read the Asterisk version from {' '.join(command)}")
    return match.group(0).split()[1]


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _module_dir(root: Path | None) -> str:
    base = root or Path("/")
    for candidate in sorted(base.glob("usr/lib/*/asterisk/modules")) + [base / "usr/lib/asterisk/modules"]:
        if (candidate / "chan_pjsip.so").exists():
            return "/" + str(candidate.relative_to(base))
    raise AsteriskInstallError(f"no Asterisk module directory with chan_pjsip.so under {base}")


def root_dir(settings: Settings) -> Path:
    """The directory of the embedded Debian root for the configured suite."""
    return settings.cache_dir / f"asterisk-root-{settings.asterisk_suite}"


def system_runtime() -> AsteriskRuntime | None:
    """The system's own Asterisk, when it is installed and recent enough."""
    binary = shutil.which("asterisk") or ("/usr/sbin/asterisk" if Path("/usr/sbin/asterisk").exists() else None)
    if binary is None:
        return None
    version = _version_of([binary, "-V"])
    if _major(version) < MIN_MAJOR_VERSION:
        log.warning("system Asterisk %s is older than %d: not used", version, MIN_MAJOR_VERSION)
        return None
    return AsteriskRuntime(root=None, version=version, module_dir=_module_dir(None))


def embedded_runtime(settings: Settings) -> AsteriskRuntime | None:
    """The embedded root's Asterisk, when a complete root is already installed."""
    root = root_dir(settings)
    if not (root / COMPLETE_MARKER).exists():
        return None
    version = (root / COMPLETE_MARKER).read_text(encoding="utf-8").strip()
    return AsteriskRuntime(root=root, version=version, module_dir=_module_dir(root))


def find_runtime(settings: Settings) -> AsteriskRuntime:
    """The Asterisk to use, without installing anything; raises if there is none yet."""
    runtime = None
    if settings.asterisk_mode in ("auto", "system"):
        runtime = system_runtime()
    if runtime is None and settings.asterisk_mode in ("auto", "debootstrap"):
        runtime = embedded_runtime(settings)
    if runtime is None:
        raise AsteriskInstallError("Asterisk is not installed yet: run `binfoon asterisk install`")
    return runtime


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt already uses (so no host name is baked into the project)."""
    candidates: list[str] = []
    for path in sorted(sources_dir.glob("sources.list.d/*.sources")):
        uris: list[str] = []
        suites: list[str] = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("URIs:"):
                uris = line.split(":", 1)[1].split()
            elif line.startswith("Suites:"):
                suites = line.split(":", 1)[1].split()
            elif not line.strip():
                if uris and suites and not any(s.endswith("-security") for s in suites):
                    candidates.extend(uris)
                uris, suites = [], []
        if uris and suites and not any(s.endswith("-security") for s in suites):
            candidates.extend(uris)
    for path in [sources_dir / "sources.list", *sorted(sources_dir.glob("sources.list.d/*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and not parts[2].endswith("-security"):
                uri = next((p for p in parts[1:] if "://" in p), None)
                if uri:
                    candidates.append(uri)
    for uri in candidates:
        if "security" not in uri and not uri.startswith("cdrom:"):
            return uri.rstrip("/")
    raise AsteriskInstallError(
        "no Debian mirror found in /etc/apt; set debian_mirror in binfoon.toml or BINFOON_DEBIAN_MIRROR"
    )


def install(settings: Settings) -> AsteriskRuntime:
    """Make Asterisk available (see module docstring) and return it. Idempotent and cheap when done."""
    if settings.asterisk_mode in ("auto", "system"):
        runtime = system_runtime()
        if runtime is not None:
            log.info("using the system's Asterisk %s", runtime.version)
            return runtime
        if settings.asterisk_mode == "system":
            raise AsteriskInstallError("asterisk_mode = system, but no Asterisk 22+ is installed")
    runtime = embedded_runtime(settings)
    if runtime is not None:
        log.info("using the embedded Asterisk %s in %s", runtime.version, runtime.root)
    else:
        runtime = _debootstrap(settings)
    if os.geteuid() == 0:
        map_asterisk_account(runtime, settings.asterisk_host_user)
    else:
        log.warning("not root: Asterisk's user in %s is not mapped to host user %s",
                    runtime.root, settings.asterisk_host_user)
    return runtime


def _debootstrap(settings: Settings) -> AsteriskRuntime:
    if os.geteuid() != 0:
        raise AsteriskInstallError(
            "building the embedded Asterisk root needs root (debootstrap and chroot); "
            "run `sudo binfoon asterisk install`, or install Asterisk 22 yourself"
        )
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], check=True)
    mirror = settings.debian_mirror or apt_mirror()
    root = root_dir(settings)
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log.info("building a Debian %s root with Asterisk in %s (about a minute)", settings.asterisk_suite, root)
    started = time.monotonic()
    result = subprocess.run(
        [
            "debootstrap", "--variant=minbase", "--include=asterisk,asterisk-modules",
            settings.asterisk_suite, str(partial), mirror,
        ],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise AsteriskInstallError(f"debootstrap failed (exit {result.returncode}):\n{tail}")
    version = _version_of(["chroot", str(partial), "/usr/sbin/asterisk", "-V"])
    if _major(version) < MIN_MAJOR_VERSION:
        raise AsteriskInstallError(f"suite {settings.asterisk_suite} carries Asterisk {version}, need 22+")
    # The package's own configuration is never used: instances render theirs from asterisk-conf/.
    (partial / COMPLETE_MARKER).write_text(version + "\n", encoding="utf-8")
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    log.info("Asterisk %s installed in %.0f s", version, time.monotonic() - started)
    return AsteriskRuntime(root=root, version=version, module_dir=_module_dir(root))


# -- accounts: Asterisk's own host uid/gid, and the service user ---------------------------------
@dataclass(frozen=True)
class SystemAccount:
    """A host system account (user and its group of the same name)."""

    name: str
    uid: int
    gid: int


def _ids_in(passwd: str, name: str) -> tuple[int, int] | None:
    """(uid, gid) of ``name`` in a passwd file's text, or ``None``."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


def _ids_of(text: str, column: int) -> set[int]:
    """The numeric ids in column ``column`` of a passwd or group file's text."""
    ids = set()
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) > column and fields[column].isdigit():
            ids.add(int(fields[column]))
    return ids


def free_system_id(taken: set[int]) -> int:
    """The highest system id in none of ``taken`` (useradd's own choice, made against the host AND
    the Asterisk root, so that one number means one account on both sides)."""
    for candidate in reversed(SYSTEM_IDS):
        if candidate not in taken:
            return candidate
    raise AsteriskInstallError("no free system uid/gid left between 100 and 999")


def remap_account(passwd: str, group: str, name: str, uid: int, gid: int) -> tuple[str, str]:
    """passwd and group texts with ``name``'s user and group renumbered to ``uid``/``gid``."""
    def rewrite(text: str, number_at: int, value: int, also_gid: bool) -> str:
        lines = []
        for line in text.splitlines():
            fields = line.split(":")
            if fields[0] == name and len(fields) > number_at:
                fields[number_at] = str(value)
                if also_gid:
                    fields[3] = str(gid)
            lines.append(":".join(fields))
        return "\n".join(lines) + "\n"

    return rewrite(passwd, 2, uid, True), rewrite(group, 2, gid, False)


def host_account(name: str) -> SystemAccount | None:
    """The host account ``name`` (user and primary group), or ``None``."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return SystemAccount(name, entry.pw_uid, entry.pw_gid)


def ensure_system_account(name: str, *, also_free_in: Path | None = None,
                          extra_groups: tuple[str, ...] = ()) -> SystemAccount:
    """The host system user ``name`` with its own group, created if missing (needs root): no home,
    no shell, no password. ``also_free_in`` is a Debian root whose passwd/group must not know the
    chosen number either; ``extra_groups`` are supplementary groups the user is added to."""
    account = host_account(name)
    if account is None:
        if os.geteuid() != 0:
            raise AsteriskInstallError(
                f"the system user {name!r} does not exist; create it as root: `sudo binfoon deploy users` or "
                f"`sudo useradd --system --user-group --no-create-home --home-dir /nonexistent "
                f"--shell /usr/sbin/nologin {name}`")
        taken = {e.pw_uid for e in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
        if also_free_in is not None:
            taken |= _ids_of((also_free_in / "etc/passwd").read_text(encoding="utf-8"), 2)
            taken |= _ids_of((also_free_in / "etc/group").read_text(encoding="utf-8"), 2)
        number = free_system_id(taken)
        if not _has_group(name):
            subprocess.run(["groupadd", "--system", "--gid", str(number), name], check=True)
        subprocess.run(["useradd", "--system", "--uid", str(number), "--gid", name, "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name], check=True)
        log.info("created the system user %s (uid %d)", name, number)
        account = host_account(name)
        assert account is not None
    for group in extra_groups:
        if name not in grp.getgrnam(group).gr_mem and os.geteuid() == 0:
            subprocess.run(["usermod", "--append", "--groups", group, name], check=True)
    return account


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def map_asterisk_account(runtime: AsteriskRuntime, host_name: str) -> SystemAccount:
    """Give the root's ``asterisk`` user the uid/gid of the dedicated host account ``host_name``
    (created if missing), so no other host account (say ``postgres``) shares Asterisk's identity.

    Idempotent. Files of the root owned by the old ids follow; instance run directories under
    ``srv/`` are left alone (instances running now keep their files; the next render re-owns them).
    """
    if runtime.root is None:
        raise AsteriskInstallError("only an embedded Asterisk root is mapped; a system Asterisk has its own user")
    root = runtime.root
    account = ensure_system_account(host_name, also_free_in=root)
    old_uid, old_gid = runtime.asterisk_user()
    group_text = (root / "etc/group").read_text(encoding="utf-8")
    old_group = next((int(f[2]) for f in (line.split(":") for line in group_text.splitlines())
                      if f[0] == ROOT_ASTERISK_USER), old_gid)
    if (old_uid, old_gid, old_group) == (account.uid, account.gid, account.gid):
        return account
    passwd_text = (root / "etc/passwd").read_text(encoding="utf-8")
    clash = (_ids_of(passwd_text, 2) - {old_uid}) & {account.uid} or (_ids_of(group_text, 2) - {old_group}) & {account.gid}
    if clash:
        raise AsteriskInstallError(f"uid/gid {account.uid} of {host_name} is taken inside {root}: "
                                   "remove the root and run `binfoon asterisk install` again")
    passwd_new, group_new = remap_account(passwd_text, group_text, ROOT_ASTERISK_USER, account.uid, account.gid)
    uids, gids = {old_uid: account.uid}, {old_gid: account.gid, old_group: account.gid}
    _chown_tree(root, uids, gids)
    # Stopped instances follow too (a running one keeps its files until it stops and renders again).
    for state in sorted((root / "srv").glob("**/instance.json")):
        if not _instance_alive(state.parent):
            _chown_tree(state.parent, uids, gids)
    for name, text in (("passwd", passwd_new), ("group", group_new)):
        target = root / "etc" / name
        tmp = target.with_name(name + ".binfoon-new")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    log.info("Asterisk's user in %s is now host user %s (uid %d, gid %d)", root, host_name, account.uid, account.gid)
    return account


def _instance_alive(run_dir: Path) -> bool:
    """True while the instance in ``run_dir`` has a live Asterisk (its pid file names a process)."""
    try:
        pid = int((run_dir / "run" / "asterisk.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()


def _chown_tree(root: Path, uids: dict[int, int], gids: dict[int, int]) -> None:
    """Re-own files under ``root`` by the id maps; never below its srv/ (instances), proc, sys, dev."""
    skip = {root / "srv", root / "proc", root / "sys", root / "dev"}
    for current, dirs, files in os.walk(root):
        here = Path(current)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for entry in [here, *(here / f for f in files)]:
            st = entry.lstat()
            uid, gid = uids.get(st.st_uid, -1), gids.get(st.st_gid, -1)
            if uid != -1 or gid != -1:
                os.lchown(entry, uid, gid)
