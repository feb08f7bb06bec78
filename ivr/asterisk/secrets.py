"""The secrets an Asterisk instance shares with the service, and the reading of secret files.

Each instance has two, generated the first time it is rendered (32 random bytes, URL-safe), kept in
files beside its configuration in the run directory, never printed and never in git; they survive
restarts of the same instance:

- ``ami.secret``: the AMI user's password (``manager.conf``). 0600; ``binfoon serve`` makes it the
  service user's before it drops root.
- ``agi.secret``: the FastAGI secret. The rendered dialplan's ``BINFOON_AGI`` carries it as the first
  path segment of every AGI URL (``agi://127.0.0.1:<port>/<secret>/<route>``) and the service's
  FastAGI server refuses any request that does not start with it, so a local process that reaches
  the loopback port cannot run a flow (issue 14 item 4). Rendered by root it is 0440, root's and
  Asterisk's group's: the unprivileged service, a member of that group (as for the spool), reads it
  and may not change it. Rendered by anyone else it is 0600, theirs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ivr.asterisk.trunk import TrunkError, check_secret, secret_mode_problem

AMI_SECRET_FILE = "ami.secret"
AGI_SECRET_FILE = "agi.secret"
#: Random bytes in a generated secret (URL-safe base64: 43 characters).
SECRET_BYTES = 32


class AgiSecretMissing(RuntimeError):
    """The instance has no FastAGI secret yet: it was never rendered by this version."""


def generated_secret(path: Path) -> str:
    """The secret kept in ``path``, generated there the first time (0600 from the start, never wider)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
    return path.read_text(encoding="utf-8").strip()


def ami_secret(run_dir: Path) -> str:
    """The instance's AMI secret (generated on first use)."""
    return generated_secret(run_dir / AMI_SECRET_FILE)


def render_agi_secret(run_dir: Path, group: int | None) -> str:
    """The instance's FastAGI secret, generated on first render. As root (``group``: Asterisk's gid)
    the file is made 0440 root:group on every render, so an instance rendered before keeps working
    when Asterisk's group changes; otherwise it stays 0600, the renderer's."""
    path = run_dir / AGI_SECRET_FILE
    secret = generated_secret(path)
    if group is not None and os.geteuid() == 0:
        os.chown(path, 0, group)
        os.chmod(path, 0o440)
    return secret


def read_agi_secret(run_dir: Path) -> str:
    """The instance's FastAGI secret as rendered; ``AgiSecretMissing`` (naming the file) if there is none."""
    path = run_dir / AGI_SECRET_FILE
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise AgiSecretMissing(f"{path} does not exist: render the Asterisk instance first "
                               "(`binfoon asterisk run`, or `binfoon serve` as root)") from None
    if not secret:
        raise AgiSecretMissing(f"{path} is empty: delete it and render the Asterisk instance again")
    return secret


def read_secret_file(setting: str, path: str) -> str:
    """The secret in ``path``; refuses a missing, empty or group/world-accessible file (naming ``setting``)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TrunkError(f"{setting}: {path} does not exist") from None
    except OSError as exc:
        raise TrunkError(f"{setting}: {path} cannot be read ({exc.strerror})") from None
    problem = secret_mode_problem(setting, info.st_mode)
    if problem is not None:
        raise TrunkError(f"{problem} ({path})")
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrunkError(f"{setting}: {path} cannot be read ({exc})") from None
    check_secret(setting, secret)
    return secret
