"""``binfoon bench ...``: measured figures as JSON (never pass/fail: benchmarks are not tests)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path

from ivr.asterisk.install import AsteriskInstallError, install
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions, instances_dir
from ivr.commands.common import CommandError
from ivr.config import Settings

#: What the project promises for a fresh private instance (issue 3).
START_TARGET_S = 5.0


# Shared with ``bench cluster``; imported here too, where callers and tests find them.
from ivr.lab.bench_parts import AMD_ALLOWANCE_S, _speech_of, ideal_campaign_s, peak_overlap  # noqa: E402,F401


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench``."""
    parser = sub.add_parser("bench", help="benchmarks that print measured figures as JSON")
    kinds = parser.add_subparsers(dest="kind", required=True)
    start = kinds.add_parser("asterisk-start", help="time fresh private Asterisk starts until FullyBooted")
    start.add_argument("--runs", type=int, default=10)
    start.add_argument("--json", type=Path, help="also write the figures to this file")
    start.set_defaults(func=cmd_asterisk_start)
    register_review_latency(kinds)
    register_campaign(kinds)
    from ivr.lab.bench_cluster import register_cluster
    register_cluster(kinds)
    from ivr.lab.asr_bench import register_bench
    register_bench(kinds)


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
    # The tests' own fixture does more than start Asterisk: simulator servers, AMI login, prompts.
    lab_times = asyncio.run(_time_lab_starts(runtime, instances_dir(runtime, settings.data_dir), args.runs))
    lab_median = statistics.median(lab_times)
    figures = {
        "runs": args.runs,
        "asterisk_version": runtime.version,
        "median_s": round(median, 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "all_s": [round(t, 3) for t in times],
        "fixture_median_s": round(lab_median, 3),
        "fixture_all_s": [round(t, 3) for t in lab_times],
        "target_s": START_TARGET_S,
        "target_over_median": round(START_TARGET_S / median, 2),
        "target_over_fixture_median": round(START_TARGET_S / lab_median, 2),
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


async def _time_lab_starts(runtime: object, base_dir: Path, runs: int) -> list[float]:
    """Time the tests' ``lab`` fixture: a fresh private Asterisk with the simulated phones, until AMI is in."""
    from ivr.lab.phone_lab import PhoneLab

    times = []
    for _ in range(runs):
        began = time.monotonic()
        lab = await PhoneLab.start(runtime, base_dir, ring_s=0.3)  # type: ignore[arg-type]
        times.append(time.monotonic() - began)
        await lab.stop()
    return times


def register_review_latency(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench review-latency``."""
    p = kinds.add_parser("review-latency",
                         help="officer's hang-up -> first coordinator's phone ringing, over real officer calls")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--lanes", type=int, default=4, help="officer calls placed at the same time (distinct BINs)")
    p.add_argument("--over-pjsip", action="store_true", help="officers and coordinators behind a real PJSIP trunk")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.set_defaults(func=cmd_review_latency)


def cmd_review_latency(settings: Settings, args: argparse.Namespace) -> int:
    """Officers phone in alerts (PIN, BIN, urgency, speech, send, hang up); each time is measured."""
    if args.runs < 1 or args.lanes < 1:
        raise CommandError("--runs and --lanes must be at least 1")
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    figures = asyncio.run(_review_latency(settings, runtime, args.runs, args.lanes, args.over_pjsip))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


async def _review_latency(settings: Settings, runtime: object, runs: int, lanes: int, over_pjsip: bool) -> dict[str, object]:
    import dataclasses
    import secrets
    import tempfile

    from ivr.app import BinfoonApp
    from ivr.media.tts import synthesize
    from ivr.lab.phone_lab import PhoneLab
    from ivr.lab.scenarios import Lane, coordinator_presses, run_alert, seed_directory
    from ivr.lab.timeline import Timeline
    from storage.db import open_database

    target_s = 1.0
    with tempfile.TemporaryDirectory(prefix="binfoon-bench-") as tmp:
        work = Path(tmp)
        lab = await PhoneLab.start(runtime, instances_dir(runtime, settings.data_dir),  # type: ignore[arg-type]
                                   name=f"bench-{uuid.uuid4().hex[:6]}", over_pjsip=over_pjsip, ring_s=0.5)
        try:
            engine = open_database(f"sqlite:///{work / 'bench.db'}")
            pin = f"{secrets.randbelow(10**6):06d}"
            plan = [Lane(100 + i, f"Wijk {i}", f"+329220{i:04d}") for i in range(1, lanes + 1)]
            seed_directory(engine, pin, plan)
            for lane in plan:
                # The coordinator rejects at once: only the ring matters here, and calls stay short.
                lab.network.script(lane.coordinator_phone, coordinator_presses("9", 1.0))
            speech = await asyncio.to_thread(synthesize, "Opgelet, inbraak in de Kerkstraat. Blijf waakzaam.",
                                             "nl", work / "alert.wav")
            config = dataclasses.replace(settings, data_dir=work)
            timeline = Timeline()
            app = BinfoonApp.on_instance(config, engine, lab.asterisk, lab.ami, lab.app,
                                         dial_template=lab.dial_template, observer=timeline)
            await app.start()
            results = []
            try:
                while len(results) < runs:
                    batch = plan[: min(lanes, runs - len(results))]
                    results += await asyncio.gather(*(run_alert(lab, app, timeline, lane, speech, pin)
                                                      for lane in batch))
                    await asyncio.sleep(1.5)  # let the coordinators' short calls end
            finally:
                await app.stop()
        finally:
            await lab.stop()
    hangup = [r.hangup_to_ring_s for r in results if r.hangup_to_ring_s is not None]
    submit = [r.submit_to_ring_s for r in results if r.submit_to_ring_s is not None]
    median = statistics.median(hangup) if hangup else None
    return {
        "runs": runs, "lanes": lanes, "over_pjsip": over_pjsip,
        "rang": len(hangup), "missed": runs - len(hangup),
        "median_hangup_to_ring_s": round(median, 4) if median is not None else None,
        "p90_hangup_to_ring_s": round(sorted(hangup)[int(0.9 * (len(hangup) - 1))], 4) if hangup else None,
        "min_hangup_to_ring_s": round(min(hangup), 4) if hangup else None,
        "max_hangup_to_ring_s": round(max(hangup), 4) if hangup else None,
        "median_submit_to_ring_s": round(statistics.median(submit), 4) if submit else None,
        "target_s": target_s,
        # Ratio against the target (> 1 means faster than promised); a ring before the hang-up counts as 0.
        "target_over_median": round(target_s / max(median, 1e-3), 1) if median is not None else None,
        "all_hangup_to_ring_s": [round(v, 4) for v in hangup],
    }


def register_campaign(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench campaign``."""
    p = kinds.add_parser("campaign", help="a whole campaign on the simulator: time, efficiency, limits")
    p.add_argument("--members", type=int, default=500)
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--message-seconds", type=float, default=10.0)
    p.add_argument("--cps", type=float, default=50.0, help="the pace: new calls per second")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.set_defaults(func=cmd_campaign)


def cmd_campaign(settings: Settings, args: argparse.Namespace) -> int:
    """Every member answers, listens to the whole message, then confirms; measure against the ideal."""
    if args.members < 1 or args.channels < 1 or args.message_seconds <= 0 or args.cps <= 0:
        raise CommandError("--members, --channels, --message-seconds and --cps must be positive")
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    figures = asyncio.run(_campaign(settings, runtime, args.members, args.channels, args.message_seconds, args.cps))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


async def _campaign(settings: Settings, runtime: object, members: int, channels: int, message_s: float,
                    cps: float) -> dict[str, object]:
    import dataclasses
    import resource
    import tempfile

    from sqlalchemy import select

    from ivr.app import BinfoonApp
    from ivr.telephony.call import Recorded
    from ivr.media.compare import read_wav_mono
    from ivr.police_line.store import Officer
    from ivr.lab.phone_lab import PhoneLab
    from ivr.lab.network import EAR_POLL_S, PhoneScript
    from ivr.lab.phones import EAR_FLUSH_S
    from ivr.lab.scenarios import Lane, seed_directory
    from ivr.lab.timeline import Timeline
    from storage.db import open_database, session_scope
    from storage.models import CallAttempt, Campaign, Confirmation
    from ivr.domain.vocabulary import CampaignStatus, Urgency
    from storage.models import Bin, Person, PhoneNumber, RoleAssignment
    from ivr.domain.vocabulary import Language, PhoneRank, Role

    ring_s, rings = 0.5, 1
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory(prefix="binfoon-bench-") as tmp:
        work = Path(tmp)
        lab = await PhoneLab.start(runtime, instances_dir(runtime, settings.data_dir),  # type: ignore[arg-type]
                                   name=f"bench-{uuid.uuid4().hex[:6]}", ring_s=ring_s)
        try:
            engine = open_database(f"sqlite:///{work / 'bench.db'}")
            seed_directory(engine, "0000", [Lane(12, "Kerkwijk", "+3292100001")])
            recording = await asyncio.to_thread(_speech_of, message_s, work / "message.wav")
            with session_scope(engine) as s:
                bin_ = s.scalars(select(Bin).where(Bin.number == 12)).one()
                for i in range(members):
                    person = Person(name=f"Lid {i}", language=Language.NL)
                    person.phones.append(PhoneNumber(rank=PhoneRank.PRIMARY, e164=f"+3294{i:06d}"))
                    person.roles.append(RoleAssignment(role=Role.MEMBER, bin_id=bin_.id))
                    s.add(person)
            config = dataclasses.replace(settings, data_dir=work, max_channels=channels, max_cps=cps,
                                         member_ring_timeout_s=20.0, key_timeout_s=8.0)
            # Approval: the moment the decision is stored, whoever decided (the timeline hears it from
            # the chain right after the decision's transaction).
            timeline = Timeline()
            app = BinfoonApp.on_instance(config, engine, lab.asterisk, lab.ami, lab.app,
                                         dial_template=lab.dial_template, observer=timeline)

            def seconds(path: Path) -> float:
                samples, rate = read_wav_mono(path)
                return len(samples) / rate
            header_s = seconds(await app.renderer.wav("member_header_urgent", "nl"))
            thanks_s = seconds(await app.renderer.wav("member_thanks", "nl"))
            # Every member listens, and presses 1 ``after_s`` after it has heard the recording to its
            # end (a slow application delays the key: it is not hidden by a key timed from the answer).
            after_s = 0.3
            patience_s = AMD_ALLOWANCE_S + header_s + message_s + 60.0  # never reached while all is well
            for i in range(members):
                lab.network.script(f"+3294{i:06d}", PhoneScript.listens(
                    recording, rings=rings, key="1", after_s=after_s, timeout_s=patience_s, keeps_audio=False))
            # The call as scripted, not as measured: its rings, the answering check (the member's "Hallo?"
            # and the second of silence after it that AMD needs: 1.4 s measured, test_member_dialplan),
            # header and recording, the time the simulated ear takes to notice the end (Asterisk writes
            # the ear file every EAR_FLUSH_S; it is read every EAR_POLL_S), ``after_s``, then the "thank
            # you" every confirmation must hear before the line is freed. A slow application makes the
            # real calls longer; it must not make the ideal longer too.
            ear_s = EAR_FLUSH_S + EAR_POLL_S / 2
            key_at = AMD_ALLOWANCE_S + header_s + message_s + ear_s + after_s
            scripted_call_s = rings * ring_s + key_at + thanks_s
            await app.start()
            try:
                with session_scope(engine) as s:
                    officer_id = s.scalars(select(Person.id).join(RoleAssignment).where(
                        RoleAssignment.role == Role.POLICE_OFFICER)).one()
                    bin_id = s.scalars(select(Bin.id)).one()
                desk = app.desk
                message_id = await desk.create_draft(Officer(officer_id, "P", "nl", None), bin_id,
                                                     Urgency.URGENT)
                spool = work / "spool.wav"
                spool.write_bytes(recording.read_bytes())
                await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "bench")
                # Sent: nobody answers the review call, so the urgent message is forwarded by the zone's
                # policy at once (the review is measured by its own benchmark).
                await desk.submit(message_id, 1, "bench")
                app.chain.submitted(message_id)
                while True:
                    with session_scope(engine) as s:
                        campaign = s.scalars(select(Campaign).where(Campaign.message_id == message_id)).first()
                        status = campaign.status if campaign else None
                    if status is CampaignStatus.DONE:
                        break
                    await asyncio.sleep(0.05)
                started = timeline.decided_at.get(message_id)
                assert started is not None, "the message was never approved"
                total_s = time.monotonic() - started
                stats = app.campaigns.stats
                trunk_peak = app.calls.peak
            finally:
                await app.stop()
            with session_scope(engine) as s:
                attempts = s.scalars(select(CallAttempt)).all()
                confirmed = len(s.scalars(select(Confirmation)).all())
                durations = [(a.ended_at - a.dialled_at).total_seconds() for a in attempts
                             if a.ended_at and a.dialled_at]
            calls = [c for i in range(members) for c in lab.network.calls_to(f"+3294{i:06d}")]
            first_ring = min(c.started_at for c in calls) - started if calls else None
            # Concurrency where it costs: calls up at the simulated phones (ringing or answered).
            phone_spans = [(c.started_at, c.ended_at if c.ended_at is not None else time.monotonic())
                           for c in calls]
            phone_call_s = [c.ended_at - c.started_at for c in calls if c.ended_at is not None]
            key_after_end = [c.keys_sent[0][0] - c.end_heard_s for c in calls
                             if c.keys_sent and c.end_heard_s is not None]
            ear_lag = [c.end_heard_s - c.end_heard_audio_s for c in calls
                       if c.end_heard_s is not None and c.end_heard_audio_s is not None]
        finally:
            await lab.stop()
    per_person: dict[int, int] = {}
    for a in attempts:
        per_person[a.person_id] = per_person.get(a.person_id, 0) + 1
    ideal_s = ideal_campaign_s(members, channels, cps, scripted_call_s)
    return {
        "members": members, "channels": channels, "message_seconds": message_s, "cps_limit": cps,
        "total_s": round(total_s, 2), "ideal_s": round(ideal_s, 2),
        "efficiency": round(ideal_s / total_s, 3) if total_s else None,
        # The ideal's call: rings + key time (AMD allowance + header + message + ear + after_s) + "thank you".
        "scripted_call_s": round(scripted_call_s, 2),
        "scripted_parts_s": {"ring": rings * ring_s, "amd_allowance": AMD_ALLOWANCE_S,
                             "header": round(header_s, 2),
                             "message": message_s, "ear": round(ear_s, 3), "key_after_end": after_s,
                             "thanks": round(thanks_s, 2)},
        # Members press only after hearing the recording to its end (PhoneScript.listens).
        "members_listen": True,
        "heard_end": sum(1 for c in calls if c.end_heard_at is not None),
        "key_after_heard_end_s_median": _median(key_after_end),
        # How long after the end (as heard in the audio) the simulated ear noticed it.
        "ear_lag_s_median": _median(ear_lag),
        # What the calls really took (for diagnosis only: not used in the ideal).
        "phone_call_s_median": round(statistics.median(phone_call_s), 2) if phone_call_s else None,
        "attempt_s_median": round(statistics.median(durations), 2) if durations else None,
        "first_ring_s": round(first_ring, 3) if first_ring is not None else None,
        "peak_concurrent": peak_overlap(phone_spans),
        "dialer_peak_concurrent": stats.peak_concurrent,
        "trunk_peak_concurrent": trunk_peak,
        "calls_per_s": round(len(attempts) / total_s, 2) if total_s else None,
        "confirmed": confirmed,
        "duplicates": sum(n - 1 for n in per_person.values() if n > 1),
        "skipped": members - len(per_person),
        # The bench process runs the app AND the simulated phones (their FastAGI side) in one process.
        "app_cpu_s": round(time.process_time() - cpu_start, 2),
        "app_cpu_includes_simulator": True,
        "app_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
