"""Make Asterisk 22 available on any Debian machine.

Order of preference (``asterisk_mode = auto``): the system's own Asterisk when one is installed;
otherwise a minimal Debian root made with debootstrap from a suite that carries Asterisk 22
(Debian 12 and 13 have no ``asterisk`` package; ``testing`` does). The root lives under the
cache directory and is reused when present: it is only ever built once per machine.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ivr.config import Settings

log = logging.getLogger(__name__)

MIN_MAJOR_VERSION = 22
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
        """(uid, gid) of the unprivileged ``asterisk`` user Asterisk runs as."""
        passwd = self.host_path("/etc/passwd").read_text(encoding="utf-8")
        for line in passwd.splitlines():
            fields = line.split(":")
            if fields[0] == "asterisk":
                return int(fields[2]), int(fields[3])
        raise AsteriskInstallError("no 'asterisk' user in the Asterisk root's /etc/passwd")


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
    existing = embedded_runtime(settings)
    if existing is not None:
        log.info("using the embedded Asterisk %s in %s", existing.version, existing.root)
        return existing
    return _debootstrap(settings)


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
