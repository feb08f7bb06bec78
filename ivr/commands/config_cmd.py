"""``binfoon config show|check``: the settings in effect, and whether they are valid.

``show`` prints every setting with where it came from (default, ``binfoon.toml line N``,
``environment BINFOON_...``), secrets masked; ``check`` exits 1 with the configuration's own error
line (naming the file and line) when anything is wrong, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from ivr.config import ConfigError, Settings, config_path, settings_with_origins, shown_value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``config`` commands."""
    actions = sub.add_parser("config", help="the settings in effect (binfoon.toml, BINFOON_* variables)") \
        .add_subparsers(dest="action", required=True)
    p = actions.add_parser("show", help="every setting in effect and where it was set (secrets masked)")
    p.add_argument("--json", action="store_true", help="as JSON: {name: {value, from}}")
    p.set_defaults(func=cmd_show, needs_no_settings=True)
    p = actions.add_parser("check", help="validate the configuration; exit 1 on a problem")
    p.set_defaults(func=cmd_check, needs_no_settings=True)


def _load() -> tuple[Settings, dict[str, str]] | None:
    """The settings and their origins, or ``None`` after printing the configuration's error."""
    try:
        return settings_with_origins()
    except ConfigError as exc:
        print(f"binfoon: configuration: {exc}", file=sys.stderr)
        return None


def cmd_show(_settings: None, args: argparse.Namespace) -> int:
    """Print the effective settings; exit 1 (with the error) when they do not load."""
    loaded = _load()
    if loaded is None:
        return 1
    settings, origins = loaded
    rows = {f.name: (shown_value(f.name, getattr(settings, f.name)), origins.get(f.name, "default"))
            for f in fields(Settings)}
    if args.json:
        print(json.dumps({name: {"value": value, "from": origin} for name, (value, origin) in rows.items()},
                         indent=2))
        return 0
    path, named = config_path()
    print(f"# configuration file: {path}" + ("" if path.exists() else " (none: defaults and environment)")
          + (" (BINFOON_CONFIG)" if named else ""))
    width = max(len(name) for name in rows)
    for name, (value, origin) in rows.items():
        print(f"{name:<{width}} = {value}" + ("" if origin == "default" else f"    # {origin}"))
    return 0


def cmd_check(_settings: None, args: argparse.Namespace) -> int:
    """Validate the configuration: 0 and a summary line, or 1 and the problem."""
    loaded = _load()
    if loaded is None:
        return 1
    _settings_loaded, origins = loaded
    path, _named = config_path()
    source = str(path) if path.exists() else "no configuration file"
    print(f"configuration valid: {source}; {len(origins)} setting(s) set, the rest are defaults")
    return 0
