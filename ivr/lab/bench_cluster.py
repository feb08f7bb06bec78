"""``binfoon bench cluster``: a national day in miniature on a farm (issue 18 item 7).

``--bins`` BINs of ``--members`` listening members each (a Belgian BIN has about 116 households) are
warned at once on ``--nodes`` nodes behind the Kamailio edge, under the carrier's ``--channels`` and
``--cps``. Measured: the whole day against the channel-bound ideal, per BIN the time to reach 95 % of
its members, calls a second, the peak of calls up at the phones, CPU seconds per call of every
Asterisk and of every ``binfoon serve``, and database transactions per call (PostgreSQL's own
counters). ``--kill-at-half`` SIGKILLs one node's service when half the members have confirmed (it is
restarted like systemd would). The unit costs feed the capacity model (``ivr.lab.capacity``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from ivr.commands.common import CommandError
from ivr.config import Settings

_TICKS = 100.0  # clock ticks a second (/proc/<pid>/stat), Linux's USER_HZ


def register_cluster(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench cluster``."""
    p = kinds.add_parser("cluster", help="overlapping campaigns on a farm of nodes: a national day in miniature")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--bins", type=int, default=30)
    p.add_argument("--members", type=int, default=100, help="members per BIN")
    p.add_argument("--channels", type=int, default=90, help="the carrier's channels, farm-wide")
    p.add_argument("--cps", type=float, default=30.0, help="the carrier's new calls a second, farm-wide")
    p.add_argument("--message-seconds", type=float, default=10.0)
    p.add_argument("--kill-at-half", action="store_true",
                   help="SIGKILL node-0's service when half the members have confirmed (then restart it)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep-unheard", type=Path, metavar="DIR",
                   help="keep here what each phone heard on a call where it did not hear the recording to its end")
    p.set_defaults(func=cmd_cluster)


def cmd_cluster(settings: Settings, args: argparse.Namespace) -> int:
    """Run the day, print the figures as JSON."""
    from ivr.asterisk.install import AsteriskInstallError, install

    if min(args.nodes, args.bins, args.members, args.channels) < 1 or args.cps <= 0 or args.message_seconds <= 0:
        raise CommandError("--nodes, --bins, --members, --channels, --cps and --message-seconds must be positive")
    if args.bins > 60 or args.members > 999_999:
        raise CommandError("at most 60 BINs (one number prefix each) and 999999 members a BIN")
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    figures = asyncio.run(_day(settings, runtime, args))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process and its reaped children (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _TICKS


def _db_tx(engine: object) -> int:
    from sqlalchemy import text

    with engine.connect() as c:  # type: ignore[attr-defined]
        return int(c.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                  "WHERE datname = current_database()")).scalar_one())


async def _day(settings: Settings, runtime: object, args: argparse.Namespace) -> dict[str, object]:
    from sqlalchemy import func, select

    from ivr.asterisk.instance import instances_dir
    from ivr.domain.vocabulary import CampaignStatus
    from ivr.lab.bench_parts import AMD_ALLOWANCE_S, _speech_of, ideal_campaign_s, peak_overlap
    from ivr.lab.capacity import UnitCosts, size
    from ivr.lab.farm import Farm
    from ivr.lab.farm_world import utc
    from ivr.lab.network import EAR_POLL_S, PhoneScript
    from ivr.lab.phones import EAR_FLUSH_S
    from ivr.media.compare import read_wav_mono
    from ivr.media.voice import PromptRenderer
    from storage.db import session_scope
    from storage.models import CallAttempt, Campaign, Confirmation

    parent = instances_dir(runtime, settings.data_dir)  # type: ignore[arg-type]
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bc-", dir=parent))  # short: the edge's control socket path has a limit
    work.chmod(0o755)
    recording = await asyncio.to_thread(_speech_of, args.message_seconds, work / "message.wav")
    renderer = PromptRenderer(Path(__file__).resolve().parents[2] / "prompts" / "rendered")

    def seconds(path: Path) -> float:
        samples, rate = read_wav_mono(path)
        return len(samples) / rate
    header_s = seconds(await renderer.wav("member_header_urgent", "nl"))
    thanks_s = seconds(await renderer.wav("member_thanks", "nl"))
    renderer.close()
    ring_s, after_s = 0.5, 0.3
    ear_s = EAR_FLUSH_S + EAR_POLL_S / 2
    # The call as scripted (as ``bench campaign``): ring, answering check, header, message, ear, key, thanks.
    scripted_call_s = ring_s + AMD_ALLOWANCE_S + header_s + args.message_seconds + ear_s + after_s + thanks_s
    total_members = args.bins * args.members
    farm = await Farm.start(runtime, work, nodes=args.nodes, channels=args.channels,  # type: ignore[arg-type]
                            cps=args.cps, ring_s=ring_s,
                            settings={"member_ring_timeout_s": "20", "key_timeout_s": "8"})
    killed_at: float | None = None
    try:
        assert farm.world is not None and farm.network is not None and farm.engine is not None
        engine = farm.engine
        members = []
        for b in range(args.bins):
            # Geographic Belgian numbers (+32 5x, 3x, ...: 8 digits), one prefix a BIN, never 0900.
            members += farm.world.seed_bin(100 + b, args.members, f"+32{'531682'[b // 10]}{b % 10}")
        if args.keep_unheard is not None:
            args.keep_unheard.mkdir(parents=True, exist_ok=True)
            farm.network.keep_unheard_ears = args.keep_unheard
        for m in members:
            farm.network.script(m.number, PhoneScript.listens(recording, rings=1, key="1", after_s=after_s,
                                                              timeout_s=AMD_ALLOWANCE_S + header_s
                                                              + args.message_seconds + 60.0, keeps_audio=False))
        def app_pid(i: int) -> int | None:
            process = farm.nodes[i].process
            return process.pid if process is not None else None
        cpu0 = {n.index: _cpu_s(n.asterisk.pid) for n in farm.nodes}
        # Each service's CPU so far is counted from these baselines (a restarted one from zero).
        app0 = {n.index: _cpu_s(app_pid(n.index)) for n in farm.nodes}
        app_spent = 0.0
        tx0 = _db_tx(engine)
        started = time.monotonic()
        wall0 = time.time()
        messages = [await farm.world.submit_approved(100 + b, recording) for b in range(args.bins)]

        def progress() -> tuple[int, list[CampaignStatus]]:
            with session_scope(engine) as s:
                confirmed = s.scalar(select(func.count()).select_from(Confirmation)) or 0
                statuses = list(s.scalars(select(Campaign.status)))
            return confirmed, statuses
        while True:
            confirmed, statuses = await asyncio.to_thread(progress)
            if len(statuses) == len(messages) and all(st is CampaignStatus.DONE for st in statuses):
                break
            if args.kill_at_half and killed_at is None and confirmed >= total_members // 2:
                killed_at = time.monotonic() - started
                app_spent += _cpu_s(app_pid(0)) - app0[0]
                app0[0] = 0.0
                farm.kill_service(0)
                await farm.restart_service(0, wait=False)
            if time.monotonic() - started > 6 * 3600:
                raise CommandError("the day did not end within 6 hours")
            await asyncio.sleep(0.5)
        total_s = time.monotonic() - started
        tx = _db_tx(engine) - tx0
        cpu_asterisk = sum(_cpu_s(n.asterisk.pid) - cpu0[n.index] for n in farm.nodes)
        cpu_app = app_spent + sum(_cpu_s(app_pid(n.index)) - app0[n.index] for n in farm.nodes)
        with session_scope(engine) as s:
            confirmations = {c.person_id: utc(c.confirmed_at) for c in s.scalars(select(Confirmation))}
            attempts = s.scalars(select(CallAttempt)).all()
            by_node: dict[str, int] = {}
            outcomes: dict[str, int] = {}
            for a in attempts:
                by_node[str(a.node_id)] = by_node.get(str(a.node_id), 0) + 1
                outcome = a.outcome.value if a.outcome is not None else "open"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        spans, per_person, bins_95 = [], {}, {}
        by_bin: dict[int, list[float]] = {}
        for m in members:
            calls = farm.network.calls_to(m.number)
            per_person[m.person_id] = len(calls)
            spans += [(c.started_at, c.ended_at if c.ended_at is not None else time.monotonic()) for c in calls]
            at = confirmations.get(m.person_id)
            if at is not None:
                by_bin.setdefault(m.bin_number, []).append(at.timestamp() - wall0)
        for b in range(args.bins):
            times = sorted(by_bin.get(100 + b, []))
            need = math.ceil(0.95 * args.members)
            bins_95[str(100 + b)] = round(times[need - 1], 1) if len(times) >= need else None
        called_again = 0
        offset = time.time() - time.monotonic()  # the phones' monotonic clock -> epoch
        for m in members:
            at = confirmations.get(m.person_id)
            if at is None:
                continue
            called_again += sum(1 for c in farm.network.calls_to(m.number) if offset + c.started_at > at.timestamp() + 0.5)
        calls_placed = len(spans)
        every_call = [c for m in members for c in farm.network.calls_to(m.number)]
        anatomy = call_anatomy(every_call)
        # The calls that were not the member's last (a duplicate is one of these): what the phone saw.
        not_last = [c for m in members for c in farm.network.calls_to(m.number)[:-1]]
        occupancy = sum(e - s for s, e in spans) / (args.channels * total_s) if total_s else None
        edge = await farm.node_states()
    finally:
        await farm.stop()
    ideal_s = ideal_campaign_s(total_members, args.channels, args.cps, scripted_call_s)
    done_95 = [v for v in bins_95.values() if v is not None]
    units = UnitCosts(call_s=round(scripted_call_s, 2),
                      asterisk_cpu_s=round(cpu_asterisk / max(1, calls_placed), 4),
                      app_cpu_s=round(cpu_app / max(1, calls_placed), 4),
                      db_tx_per_call=round(tx / max(1, calls_placed), 2))
    return {
        "nodes": args.nodes, "bins": args.bins, "members": total_members, "members_per_bin": args.members,
        "channels": args.channels, "cps_limit": args.cps, "message_seconds": args.message_seconds,
        "total_s": round(total_s, 2), "ideal_s": round(ideal_s, 2),
        "efficiency": round(ideal_s / total_s, 3) if total_s else None,
        "scripted_call_s": round(scripted_call_s, 2),
        "members_listen": True,
        "first_ring_s": round(min(s for s, _ in spans) - (started), 3) if spans else None,
        "peak_concurrent": peak_overlap(spans),
        "calls_per_s": round(calls_placed / total_s, 2) if total_s else None,
        # Where a call's time goes, at the phones (means, s): against ``scripted_call_s`` it tells a slow
        # call from an idle channel; ``channel_occupancy`` is the carrier's channels' busy share.
        "call_anatomy_s": anatomy,
        "scripted_anatomy_s": {"ring": ring_s, "answer_to_end_heard": round(AMD_ALLOWANCE_S + header_s
                                                                             + args.message_seconds + ear_s, 3),
                               "end_heard_to_hangup": round(after_s + thanks_s, 3),
                               "whole": round(scripted_call_s, 3)},
        "channel_occupancy": round(occupancy, 3) if occupancy is not None else None,
        "calls_up_by_10_s": calls_up_by(spans, started, 10.0),
        "calls_before_the_last": call_kinds(not_last),
        "confirmed": len(confirmations),
        "duplicates": sum(n - 1 for n in per_person.values() if n > 1),
        "confirmed_called_again": called_again,
        "skipped": sum(1 for n in per_person.values() if n == 0),
        "time_to_95_s": bins_95,
        "time_to_95_s_median": round(statistics.median(done_95), 1) if done_95 else None,
        "time_to_95_s_max": max(done_95) if done_95 else None,
        "attempts_by_node_id": by_node,
        "attempt_outcomes": dict(sorted(outcomes.items())),
        "asterisk_cpu_s_per_call": units.asterisk_cpu_s,
        "app_cpu_s_per_call": units.app_cpu_s,
        "db_tx_per_call": units.db_tx_per_call,
        "killed_node0_service_at_s": round(killed_at, 1) if killed_at is not None else None,
        "edge_node_states": edge,
        "capacity_model": size(units),
    }


def call_anatomy(calls: list) -> dict[str, float | None]:  # type: ignore[type-arg]
    """Mean seconds of the phases of the calls a listening phone confirmed: ringing (the network saw
    the call until it answered), answer to the recording's end heard, heard to the caller's hang-up,
    and the whole call."""
    def mean(values: list[float]) -> float | None:
        return round(statistics.fmean(values), 3) if values else None
    heard = [c for c in calls if c.answered_at is not None and c.end_heard_at is not None and c.ended_at is not None]
    return {
        "calls": len(heard),
        "ring": mean([c.answered_at - c.started_at for c in heard]),
        "answer_to_end_heard": mean([c.end_heard_at - c.answered_at for c in heard]),
        "end_heard_to_hangup": mean([c.ended_at - c.end_heard_at for c in heard]),
        "whole": mean([c.ended_at - c.started_at for c in heard]),
    }


def call_kinds(calls: list) -> dict[str, int]:  # type: ignore[type-arg]
    """How calls went at the phone: answered or not, the recording's end heard or not, a key sent or
    not, and who hung up."""
    kinds: dict[str, int] = {}
    for c in calls:
        kind = ("answered" if c.answered_at is not None else "unanswered") \
            + (", end heard" if c.end_heard_at is not None else "") \
            + (", key sent" if c.keys_sent else "") + f", ended by {c.ended_by or '?'}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def calls_up_by(spans: list[tuple[float, float]], t0: float, step_s: float) -> list[float]:
    """The mean number of calls up at the phones in each ``step_s`` from ``t0``: how full the channels
    were, from the first wave to the last call."""
    if not spans:
        return []
    end = max(e for _, e in spans)
    out = []
    for k in range(int((end - t0) // step_s) + 1):
        lo, hi = t0 + k * step_s, t0 + (k + 1) * step_s
        out.append(round(sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in spans) / step_s, 1))
    return out

