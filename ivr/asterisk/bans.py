"""The SIP ban list as PJSIP sees it: one ``type = acl`` section that denies the banned addresses.

Rules:
- the file is ``<run dir>/etc/officers/pjsip-bans.conf``: the one folder of Asterisk's configuration
  the unprivileged service may write (the officers' accounts live there too), which ``pjsip.conf``
  includes with ``#tryinclude``; it is replaced whole, never half written;
- PJSIP checks every request's source address against it before anything else (``res_pjsip_acl``):
  a banned address gets ``403 Forbidden`` whatever password it sends;
- the file is also the ban list's only state: each ``deny`` line carries its expiry as a comment, so
  a restart of the service (or of Asterisk) keeps the bans, and an expired one is dropped at start;
- it is reloaded like the officers' accounts: at once when the service runs as root (the lab); in
  production by root through systemd's path unit (``binfoon asterisk reload-pjsip``).

Rendering and parsing are pure; writing and reloading are the edges (``ivr.asterisk.officers``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from ivr.asterisk.officers import OFFICERS_FILE, write_service_include
from ivr.domain.sip_bans import Ban, canonical_address

#: Where the file lives, relative to the instance's ``etc`` directory (``pjsip.conf`` includes it).
BANS_FILE = OFFICERS_FILE.parent / "pjsip-bans.conf"

#: The ACL's section name (``acl`` sections are global: PJSIP applies every one to every request).
ACL_SECTION = "binfoon-bans"

_DENY = re.compile(r"^deny\s*=\s*(?P<network>\S+)\s*;\s*until=(?P<until>\S+)\s+failures=(?P<failures>\d+)\s*$")


def render_bans(bans: Iterable[Ban]) -> str:
    """The PJSIP configuration that refuses these addresses (no bans: a file that defines nothing)."""
    lines = [
        "; BINfoon's SIP ban list: addresses whose SIP authentication failed too often (RELIABILITY A10).",
        "; Written by the service; each line's expiry is its state. Do not edit.",
    ]
    entries = sorted(bans, key=lambda b: (b.until, b.address))
    if entries:
        lines += ["", f"[{ACL_SECTION}]", "type = acl"]
    for ban in entries:
        address = canonical_address(ban.address)
        if address is None or address != ban.address:
            raise ValueError(f"{ban.address!r} is not an IP address in its canonical form")
        if ban.until.tzinfo is None:
            raise ValueError("a ban's expiry must carry its time zone")
        prefix = 32 if ipaddress.ip_address(address).version == 4 else 128
        until = ban.until.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
        lines.append(f"deny = {address}/{prefix} ; until={until} failures={ban.failures}")
    return "\n".join(lines) + "\n"


def parse_bans(text: str) -> dict[str, Ban]:
    """The bans a file written by ``render_bans`` holds (lines it did not write are ignored)."""
    bans: dict[str, Ban] = {}
    for line in text.splitlines():
        match = _DENY.match(line.strip())
        if match is None:
            continue
        address = canonical_address(match["network"].split("/", 1)[0])
        try:
            until = dt.datetime.fromisoformat(match["until"])
        except ValueError:
            continue
        if address is None or until.tzinfo is None:
            continue
        bans[address] = Ban(address, until, int(match["failures"]))
    return bans


def bans_path(run_dir: Path) -> Path:
    """Host path of an instance's ban list."""
    return run_dir / "etc" / BANS_FILE


def read_bans(run_dir: Path) -> dict[str, Ban]:
    """The bans the instance's file holds now (none when there is no file)."""
    try:
        return parse_bans(bans_path(run_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def write_bans(run_dir: Path, bans: Iterable[Ban], group: int | None = None) -> Path:
    """Replace the instance's ban list at once (readable by Asterisk's group only). Returns its path."""
    return write_service_include(bans_path(run_dir), render_bans(bans), group)
