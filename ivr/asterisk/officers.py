"""Officers' own SIP accounts as PJSIP sees them: endpoints, auths and AORs in one included file.

Rules:
- an officer's endpoint is found ONLY by a successful digest authentication: ``identify_by =
  auth_username`` (the endpoint's name is the account's username), never by source address or the
  From header, which any SIP client sets as it likes;
- Asterisk is given the digest HA1 = md5(username:realm:password), never the password: a leaked
  configuration file does not give the password away (it still gives the account: keep it private);
- the endpoint's context is ``binfoon-officer``: the police line and nothing else (no way out);
- the file is ``<run dir>/etc/officers/pjsip-officers.conf``, which ``pjsip.conf`` includes with
  ``#tryinclude``; it is replaced whole (never half written) and PJSIP reloads it.

Rendering is pure (``render_officers``); writing the file and asking Asterisk to reload are the edges.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The digest realm of the officers' accounts: Asterisk's ``default_realm``, which is also the realm of
#: the challenge to a request from a not-yet-identified client (its first REGISTER or INVITE).
#: The stored HA1 binds it: changing it means rotating every account.
REALM = "asterisk"

#: The dialplan context every officer's endpoint lands in (``dialplan/binfoon-inbound.conf``).
OFFICER_CONTEXT = "binfoon-officer"

#: Where the file lives, relative to the instance's ``etc`` directory (``pjsip.conf`` includes it).
OFFICERS_FILE = Path("officers") / "pjsip-officers.conf"

#: A username is also the PJSIP section's name: short, lower-case, safe in a config file and a channel name.
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,27}")

#: Section names the rest of the configuration uses (``[trunk]``, ``[trunk-auth]``, ``[transport-udp]``,
#: ``[carrier-in]``, ...) begin with these: an officer's account may never take one of them.
RESERVED_PREFIXES = ("global", "system", "trunk", "carrier", "transport", "anonymous", "acl", "binfoon")


@dataclass(frozen=True)
class OfficerEndpoint:
    """One officer's SIP account as Asterisk needs it: the username and the digest HA1."""

    username: str
    #: md5(username:realm:password), 32 hex digits.
    ha1: str


def digest_ha1(username: str, password: str, realm: str = REALM) -> str:
    """The digest HA1 of a SIP account (RFC 2617): what Asterisk verifies a response against."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def username_problem(username: str) -> str | None:
    """Why ``username`` cannot name an officer's SIP account, or ``None`` when it can."""
    if not USERNAME_PATTERN.fullmatch(username):
        return ("a SIP username is 3 to 28 characters: lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter or a digit")
    if username.startswith(RESERVED_PREFIXES):
        return f"{username!r} is a name BINfoon's own SIP configuration uses"
    return None


def render_officers(endpoints: Iterable[OfficerEndpoint]) -> str:
    """The PJSIP configuration for these accounts (an empty list gives a file that defines nothing)."""
    lines = [
        "; Officers' own SIP accounts: written by BINfoon from its database (binfoon person sip-account).",
        "; Do not edit: the next change or start replaces this file.",
    ]
    for account in sorted(endpoints, key=lambda e: e.username):
        problem = username_problem(account.username)
        if problem is not None:
            raise ValueError(problem)
        if not re.fullmatch(r"[0-9a-f]{32}", account.ha1):
            raise ValueError(f"the HA1 of {account.username!r} is not 32 hex digits")
        name = account.username
        lines += [
            "",
            f"[{name}]",
            "type = endpoint",
            f"context = {OFFICER_CONTEXT}",
            # Found only by the Authorization header's username, i.e. after a digest challenge.
            "identify_by = auth_username",
            f"auth = {name}",
            f"aors = {name}",
            "disallow = all",
            "allow = alaw,ulaw",
            "dtmf_mode = rfc4733",
            "direct_media = no",
            "rtp_symmetric = yes",
            "force_rport = yes",
            "rewrite_contact = yes",
            # The caller ID a softphone sends is its own claim: never trusted, never passed on.
            "trust_id_inbound = no",
            "send_pai = no",
            "allow_subscribe = no",
            "",
            f"[{name}]",
            "type = auth",
            "auth_type = digest",
            f"username = {name}",
            f"realm = {REALM}",
            f"password_digest = MD5:{account.ha1}",
            "",
            f"[{name}]",
            "type = aor",
            "max_contacts = 1",
            "remove_existing = yes",
        ]
    return "\n".join(lines) + "\n"


def officers_path(run_dir: Path) -> Path:
    """Host path of an instance's officers file."""
    return run_dir / "etc" / OFFICERS_FILE


def write_officers(run_dir: Path, text: str, group: int | None = None) -> Path:
    """Replace the instance's officers file with ``text`` at once (a temporary file renamed over it),
    readable by Asterisk's group only. Returns its path."""
    return write_service_include(officers_path(run_dir), text, group)


def write_service_include(path: Path, text: str, group: int | None = None) -> Path:
    """Replace one of the files the service writes for Asterisk in ``etc/officers/`` (the officers'
    accounts, the SIP ban list) with ``text`` at once, readable by Asterisk's group only."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(temporary, 0o640)
    if group is not None and os.geteuid() == 0:
        os.chown(path.parent, 0, group)
        os.chown(temporary, 0, group)
    os.replace(temporary, path)
    return path


#: The CLI command that makes PJSIP read its configuration (and so the officers file) again.
RELOAD_COMMAND = "module reload res_pjsip.so"


class ReloadError(RuntimeError):
    """Asterisk could not be asked to reload (not running, or its control socket is not ours to use)."""


def reload_pjsip(run_dir: Path, timeout_s: float = 10.0) -> str:
    """Ask the running Asterisk of ``run_dir`` to reload PJSIP, over its control socket (what
    ``asterisk -rx`` does). AMI cannot: its user has no ``system``/``config`` rights, on purpose.
    Returns what Asterisk answered."""
    return asterisk_cli(run_dir, RELOAD_COMMAND, timeout_s)


def asterisk_cli(run_dir: Path, command: str, timeout_s: float = 10.0) -> str:
    """Run one CLI command on the running Asterisk of ``run_dir`` over its control socket (as root or
    Asterisk's own user: the socket is 0600); returns its output."""
    control = run_dir / "run" / "asterisk.ctl"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(control))
            sock.recv(256)  # the banner: host/pid/version
            sock.sendall(f"cli quit after {command}".encode() + b"\0")
            chunks = []
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
    except OSError as exc:
        raise ReloadError(f"cannot reach Asterisk's control socket {control}: {exc.strerror or exc}") from None
    return b"".join(chunks).replace(b"\0", b"").decode("utf-8", "replace").strip()


def endpoint_of_channel(channel: str) -> str | None:
    """The PJSIP endpoint a channel belongs to, from the name Asterisk gives it (``PJSIP/<endpoint>-<seq>``);
    ``None`` for any other technology."""
    if not channel.startswith("PJSIP/"):
        return None
    name, sep, sequence = channel.removeprefix("PJSIP/").rpartition("-")
    if not sep or not name or not re.fullmatch(r"[0-9a-f]{8}", sequence):
        return None
    return name
