"""Settings: defaults in code < ``binfoon.toml`` < ``BINFOON_*`` environment variables.

Rules: one ``Settings`` object for the whole app, validated at start; unknown keys fail start-up;
secrets are never stored here (they live in files, see ``ivr.asterisk.instance``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """The configuration is invalid; the message says which key and why."""


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "binfoon"


@dataclass(frozen=True)
class Settings:
    """Every setting of the application, with its default."""

    #: Runtime data (SQLite database, recordings, instance run directories). Git-ignored.
    data_dir: Path = field(default_factory=lambda: Path("var").resolve())
    #: Where the embedded Asterisk root is installed and reused.
    cache_dir: Path = field(default_factory=_default_cache_dir)
    #: SQLAlchemy URL; empty means SQLite (WAL) in ``data_dir``.
    database_url: str = ""
    #: ``auto`` (system Asterisk if installed, else a Debian root), ``system`` or ``debootstrap``.
    asterisk_mode: str = "auto"
    #: Debian suite for the embedded root; ``testing`` carries Asterisk 22.
    asterisk_suite: str = "testing"
    #: Debian mirror for debootstrap; empty means: the one this machine's apt already uses.
    debian_mirror: str = ""
    #: How an outbound call reaches a phone number: ``${NUMBER}`` is replaced by the E.164 number.
    dial_template: str = "Local/${NUMBER}@sim-phone"
    #: Seconds an outbound call may ring before it counts as not answered.
    ring_timeout_s: float = 30.0
    #: The application's FastAGI server (loopback).
    agi_port: int = 4573
    #: The simulated phone network's FastAGI server (demo and tests; loopback).
    sim_agi_port: int = 4574
    #: The number every outbound call presents (E.164): the zone's registered Belgian number.
    caller_id_number: str = "+3250000000"

    @property
    def uses_simulator(self) -> bool:
        """True when calls go to the simulated phone network rather than a real trunk."""
        return "@sim-phone" in self.dial_template

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with the SQLite default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'binfoon.db'}"


_ENV_PREFIX = "BINFOON_"


def _coerce(name: str, raw: Any, target: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind in ("Path", Path):
            return Path(str(raw)).expanduser().resolve()
        if kind in ("float", float):
            return float(raw)
        if kind in ("int", int):
            return int(raw)
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{target}: {name} = {raw!r} is not a valid {kind}") from exc


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, the TOML file (if any) and the environment."""
    env = os.environ if environ is None else environ
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or Path(env.get("BINFOON_CONFIG", "binfoon.toml"))
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, path)
    elif config_file is not None:
        raise ConfigError(f"{path}: no such file")

    for env_key, raw in env.items():
        if not env_key.startswith(_ENV_PREFIX) or env_key == "BINFOON_CONFIG":
            continue
        key = env_key[len(_ENV_PREFIX):].lower()
        if key not in known:
            raise ConfigError(f"environment: unknown setting {env_key}")
        values[key] = _coerce(key, raw, "environment")

    settings = dataclasses.replace(Settings(), **values)
    if settings.asterisk_mode not in ("auto", "system", "debootstrap"):
        raise ConfigError(f"asterisk_mode must be auto, system or debootstrap, not {settings.asterisk_mode!r}")
    if "${NUMBER}" not in settings.dial_template:
        raise ConfigError("dial_template must contain ${NUMBER}")
    return settings
