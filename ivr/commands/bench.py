"""``binfoon bench ...``: measured figures as JSON (never pass/fail: benchmarks are not tests)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from ivr.asterisk.install import AsteriskInstallError, install
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions, instances_dir
from ivr.cli import CommandError
from ivr.config import Settings

#: What the project promises for a fresh private instance (issue 3).
START_TARGET_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench``."""
    parser = sub.add_parser("bench", help="benchmarks that print measured figures as JSON")
    kinds = parser.add_subparsers(dest="kind", required=True)
    start = kinds.add_parser("asterisk-start", help="time fresh private Asterisk starts until FullyBooted")
    start.add_argument("--runs", type=int, default=10)
    start.add_argument("--json", type=Path, help="also write the figures to this file")
    start.set_defaults(func=cmd_asterisk_start)


def cmd_asterisk_start(settings: Settings, args: argparse.Namespace) -> int:
    """Start and destroy ``--runs`` fresh instances; report the start times."""
    if args.runs < 1:
        raise CommandError("--runs must be at least 1")
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    times = []
    for _ in range(args.runs):
        instance = AsteriskInstance(runtime, InstanceOptions(name=f"bench-{uuid.uuid4().hex[:8]}", sim_agi_port=1),
                                    instances_dir(runtime, settings.data_dir))
        began = time.monotonic()
        try:
            instance.start()  # render + spawn + wait for FullyBooted over AMI
            times.append(time.monotonic() - began)
        finally:
            instance.destroy()
    median = statistics.median(times)
    figures = {
        "runs": args.runs,
        "asterisk_version": runtime.version,
        "median_s": round(median, 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "all_s": [round(t, 3) for t in times],
        "target_s": START_TARGET_S,
        "target_over_median": round(START_TARGET_S / median, 2),
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0
