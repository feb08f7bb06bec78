"""``binfoon demo``: the chain on embedded defaults, narrated step by step.

Today it shows the telephone foundation: a private Asterisk, the simulated phone network, and
real calls whose outcomes and keys reach Python. Later work grows it into the whole chain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from ivr.asterisk.install import AsteriskInstallError, install
from ivr.asterisk.instance import instances_dir
from ivr.cli import CommandError
from ivr.config import Settings
from ivr.media.compare import locate_file
from ivr.media.speech import synthesize
from ivr.prompts import text
from ivr.simulator.lab import PhoneLab
from ivr.simulator.network import PhoneScript
from ivr.telephony.agi import AgiCall
from ivr.telephony.outcomes import classify_dial

#: The demo's phones: number -> (what it does, what the demo expects).
DEMO_PHONES: dict[str, tuple[PhoneScript, str]] = {
    "+3292000001": (PhoneScript.answers(rings=2, keys=((8.5, "1"),)), "answered"),
    "+3292000002": (PhoneScript.busy(), "busy"),
    "+3292000003": (PhoneScript.never_answers(), "no_answer"),
    "+3292000004": (PhoneScript.congested(), "congestion"),
    "+3292000005": (PhoneScript.unreachable(), "invalid_number"),
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon demo``."""
    parser = sub.add_parser("demo", help="run the chain on embedded defaults with simulated phones")
    parser.add_argument("--report", type=Path, help="write the measured figures as JSON to this file")
    parser.add_argument("--over-pjsip", action="store_true",
                        help="reach the phones through a real PJSIP trunk to a second Asterisk")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; exit 1 if any call ended differently than scripted."""
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    report = asyncio.run(_demo(settings, runtime, args.over_pjsip))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    return 0 if report["all_as_expected"] else 1


async def _demo(settings: Settings, runtime: Any, over_pjsip: bool) -> dict[str, Any]:
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.2f} s] {text}", flush=True)

    say(f"Asterisk {runtime.version} ({'embedded Debian root' if runtime.root else 'system'})")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lab = await PhoneLab.start(runtime, instances_dir(runtime, settings.data_dir),
                               name=f"demo-{uuid.uuid4().hex[:6]}", over_pjsip=over_pjsip, ring_s=1.0)
    try:
        say(f"private Asterisk up: AMI on 127.0.0.1:{lab.asterisk.options.ami_port} (loopback only), "
            f"phones reached through {lab.dial_template}")
        media_dir = settings.data_dir / "demo"
        message = await asyncio.to_thread(synthesize, text("demo_test_message"), "nl", media_dir / "message.wav")
        say(f"test message spoken by espeak-ng (nl) into {message}")
        sound = lab.publish_audio(message, "demo-message")
        keys: dict[str, str | None] = {}

        async def member_call(call: AgiCall) -> None:
            await call.play(sound)
            keys[call.unique_id] = await call.wait_for_digit(6)

        lab.app.add_route("member_call", member_call)
        results = []
        for number, (script, expected) in DEMO_PHONES.items():
            lab.network.script(number, script)
            attempt = str(uuid.uuid4())
            say(f"dialling {number} ({script.behaviour.value}) as attempt {attempt[:8]}")
            result = await lab.call(number, attempt_id=attempt, ring_timeout_s=6.0)
            outcome = classify_dial(result.success, result.reason, result.cause).value
            line: dict[str, Any] = {"number": number, "scripted": script.behaviour.value,
                                    "outcome": outcome, "expected": expected,
                                    "reason": result.reason, "cause": result.cause}
            if result.success:
                call = (await lab.network.wait_for_calls(number, 1, timeout_s=30))[0]
                line["key"] = keys.get(attempt)
                heard = await asyncio.to_thread(call.heard_audio)
                match = locate_file(message, heard)
                line["heard_ncc"] = round(match.peak_ncc, 4)
                say(f"  answered; the phone heard the message (correlation {match.peak_ncc:.4f}) "
                    f"and pressed {line['key']!r}, which reached Python")
            else:
                say(f"  not answered: {outcome} (originate reason {result.reason}, cause {result.cause})")
            results.append(line)
        ok = all(r["outcome"] == r["expected"] for r in results) and results[0].get("key") == "1"
        say("every call ended as scripted" if ok else "SOME CALLS DID NOT END AS SCRIPTED")
        return {"asterisk": {"version": runtime.version, "over_pjsip": over_pjsip},
                "calls": results, "all_as_expected": ok,
                "seconds": round(time.monotonic() - started, 2)}
    finally:
        await lab.stop()
