"""``binfoon demo``: the chain on embedded defaults, narrated step by step.

A private Asterisk and the simulated phone network: first real calls whose outcomes and keys reach
Python; then BINFOON 1: a simulated officer phones the police line, types the PIN, picks the BIN
and urgency, speaks a prepared alert (espeak-ng) and sends it; the coordinator's phone rings, the
coordinator hears the original recording and presses 1; BINFOON 2: the BIN's 25 simulated member
households are called with that recording and confirm, replay, ring out, are busy or have an answering
machine, as scripted; the report gives the measured counts beside the scripted ones.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from ivr.asterisk.install import AsteriskInstallError, install
from ivr.asterisk.instance import instances_dir
from ivr.commands.common import CommandError
from ivr.config import Settings
from ivr.media.compare import locate_file, locate_speech_file
from ivr.media.tts import synthesize
from ivr.media.prompts import text
from ivr.lab.copies_lab import CopiesLab
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import PhoneScript
from ivr.telephony.agi import AgiCall
from ivr.telephony.outcomes import classify_dial

#: The demo's phones: number -> (what it does, what the demo expects).
DEMO_PHONES: dict[str, tuple[PhoneScript, str]] = {
    # Presses 1 after the answering check (AMD) and the whole test message.
    "+3292000001": (PhoneScript.answers(rings=2, keys=((14.0, "1"),)), "answered"),
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
    parser.add_argument("--database", metavar="URL",
                        help="an empty database to run on (postgresql+psycopg://...); default: a new SQLite "
                             "file under data_dir/demo")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run the demo; exit 1 if any call ended differently than scripted."""
    try:
        runtime = install(settings)
    except AsteriskInstallError as exc:
        raise CommandError(str(exc)) from exc
    if args.database:
        _check_empty(args.database)
    report = asyncio.run(_demo(settings, runtime, args.over_pjsip, args.database))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    return 0 if report["all_as_expected"] else 1


def _check_empty(url: str) -> None:
    """The demo seeds its own directory: the database given must hold no tables yet."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from storage.db import make_engine

    try:
        engine = make_engine(url)
        try:
            names = inspect(engine).get_table_names()
        finally:
            engine.dispose()
    except (SQLAlchemyError, ValueError) as exc:
        raise CommandError(f"--database: cannot open {url.split('@')[-1]}: {exc.__class__.__name__}") from None
    if names:
        raise CommandError(f"--database: {url.split('@')[-1]} already holds {len(names)} tables; "
                           "the demo needs an empty database")


async def _demo(settings: Settings, runtime: Any, over_pjsip: bool, database: str | None = None) -> dict[str, Any]:
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.2f} s] {text}", flush=True)

    say(f"Asterisk {runtime.version} ({'embedded Debian root' if runtime.root else 'system'})")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lab = await PhoneLab.start(runtime, instances_dir(runtime, settings.data_dir),
                               name=f"demo-{uuid.uuid4().hex[:6]}", over_pjsip=over_pjsip, ring_s=1.0,
                               police_line=settings.police_line_number)
    try:
        say(f"private Asterisk up: AMI on 127.0.0.1:{lab.asterisk.options.ami_port} (loopback only), "
            f"phones reached through {lab.dial_template}")
        calls, calls_ok = await _phone_network_check(lab, settings, say)
        chain = await _binfoon1(lab, settings, say, database)
        ok = calls_ok and chain["ok"]
        say("the demo ran as scripted" if ok else "SOMETHING DID NOT GO AS SCRIPTED")
        return {"asterisk": {"version": runtime.version, "over_pjsip": over_pjsip},
                "database": chain["database"],
                "message": chain["message"], "review": chain["review"], "campaign": chain["campaign"],
                "sms": chain["sms"], "email": chain["email"],
                "expected": chain["expected"], "calls": calls,
                "all_as_expected": ok, "seconds": round(time.monotonic() - started, 2)}
    finally:
        await lab.stop()


async def _phone_network_check(lab: PhoneLab, settings: Settings, say: Any) -> tuple[list[dict[str, Any]], bool]:
    """Real calls to scripted phones: outcomes told apart, the key pressed reaches Python."""
    media_dir = settings.data_dir / "demo"
    message = await asyncio.to_thread(synthesize, text("demo_test_message"), "nl", media_dir / "message.wav")
    sound = lab.publish_audio(message, "demo-message")
    keys: dict[str, str | None] = {}

    async def member_call(call: AgiCall) -> None:
        await call.play(sound)
        keys[call.unique_id] = await call.wait_for_digit(10)
        await call.set_variable("BINFOON_DONE", "1")  # handled: the dialplan's own fallback stays silent

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
    lab.app.remove_route("member_call")  # the application serves member calls from here on
    ok = all(r["outcome"] == r["expected"] for r in results) and results[0].get("key") == "1"
    return results, ok


async def _transcript(app: Any, engine: Any, recording_id: int, spoken_text: str, say: Any,
                      timeout_s: float = 180.0) -> dict[str, Any]:
    """The archive's transcript of the officer's take (what the service's worker made of it), opened
    with the recordings' key, and its word error rate against what espeak-ng was told to say."""
    from sqlalchemy import select

    from ivr.asr.wer import word_error_rate
    from storage.db import session_scope
    from storage.models import Transcript
    from storage.sealed import open_transcript

    if app.transcripts.model_path() is None:
        say(f"  no speech model ({app.transcripts.why_no_model()}): the take is kept untranscribed; "
            "`binfoon models install nl` installs Whisper base")
        return {"model_in_use": False}
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope(engine) as s:
            row = s.scalars(select(Transcript).where(Transcript.recording_id == recording_id)).first()
            if row is not None:
                opened = open_transcript(app.desk.store.key, recording_id, row.text, row.words)
                found = {"engine": row.engine, "model": row.model, "language": row.language,
                         "uncertain": row.uncertain, "text": opened.text,
                         # espeak-ng's synthetic voice is hard for recognisers (the bench: ~0.8 for Dutch)
                         "wer_vs_spoken_text": round(word_error_rate(spoken_text, opened.text), 3)}
                break
        if time.monotonic() > deadline:
            say(f"  NO TRANSCRIPT within {timeout_s:.0f} s")
            return {"model_in_use": True}
        await asyncio.sleep(0.5)
    say(f"  transcript ({found['engine']}, {found['model']}, {found['language']}): {found['text']!r}; "
        f"WER against the text espeak-ng spoke {found['wer_vs_spoken_text']}")
    return found


async def _binfoon1(lab: PhoneLab, settings: Settings, say: Any, database: str | None = None) -> dict[str, Any]:
    """BINFOON 1: an officer phones in an alert, the coordinator hears it and forwards it."""
    import secrets

    from ivr.app import BinfoonApp
    from ivr.lab.timeline import Timeline
    from ivr.lab.scenarios import (
        Lane, coordinator_presses, member_cases, run_alert, script_members, seed_directory, seed_members,
    )
    from storage.db import open_database, session_scope
    from storage.models import Message, ReviewDecision
    from storage.recordings import open_recording

    demo_dir = settings.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    db_path = demo_dir / f"binfoon-{time.strftime('%Y%m%d-%H%M%S')}.db"
    engine = await asyncio.to_thread(open_database, database or f"sqlite:///{db_path}")
    where = engine.url.render_as_string(hide_password=True) if database else str(db_path)
    pin = f"{secrets.randbelow(10**6):06d}"  # a fresh PIN each run: no default PIN exists anywhere
    lane = Lane(12, "Kerkwijk", "+3292100001")
    seed_directory(engine, pin, [lane])
    cases = member_cases(25, message_s=4.0 + 3.5 + 13.0)  # answering check + header + the alert
    people = seed_members(engine, lane.bin_number, cases, prefix="+32470")  # mobile numbers: SMS reach them
    script_members(lab, engine, people)
    choices = _choose_channels(engine, people)
    say(f"directory in {where} ({engine.dialect.name}): zone Gent, BIN 12 Kerkwijk with {len(people)} member households, an officer "
        "(PIN drawn for this run), a coordinator")
    say("  members' channels: " + ", ".join(f"{n} {c}" for c, n in sorted(Counter(choices.values()).items())))
    spoken_text = text("demo_police_alert")
    spoken = await asyncio.to_thread(synthesize, spoken_text, "nl", demo_dir / "officer-alert.wav")
    say(f"the officer's alert, spoken by espeak-ng: {spoken}")
    texts = CopiesLab(demo_dir)
    await asyncio.to_thread(texts.start)
    say(f"text network up: Kannel (bearerbox + smsbox, fake SMSC) at {texts.kannel.sendsms_url}, "
        f"SMTP relay 127.0.0.1:{texts.smtp.port} (STARTTLS, AUTH)")
    # Demo pace: retries after 10 s instead of 5 minutes, so the whole chain fits in a few minutes.
    # The ladder's SMS after 5 s instead of 15 minutes.
    config = dataclasses.replace(settings, data_dir=demo_dir, review_ring_timeout_s=20.0, member_ring_timeout_s=8.0,
                                 urgent_retry_after_s=10.0, no_key_retry_after_s=10.0, max_channels=10,
                                 ladder_after_s=LADDER_AFTER_S, **texts.settings())
    timeline = Timeline()
    try:
        app = BinfoonApp.on_instance(config, engine, lab.asterisk, lab.ami, lab.app, dial_template=lab.dial_template,
                                     observer=timeline)
        await app.start()
    except BaseException:
        await asyncio.to_thread(texts.stop)
        raise
    web = await _web_console(app, say)
    try:
        # The coordinator listens to the intro, the header and the whole recording, then presses 1.
        lab.network.script(lane.coordinator_phone, coordinator_presses("1", 30.0))
        say(f"officer {lane.bin_number and 'Peeters'} calls the police line {lab.police_line}: PIN, BIN 12, urgent, "
            "speaks, 3 to send")
        run = await run_alert(lab, app, timeline, lane, spoken, pin)
        say(f"  officer's call over ({[label for _, label in run.officer.steps_done]})")
        say(f"  coordinator's phone rang {run.hangup_to_ring_s:+.3f} s after the officer hung up "
            f"({run.submit_to_ring_s:.3f} s after the send key was stored)" if run.hangup_to_ring_s is not None
            else "  THE COORDINATOR'S PHONE DID NOT RING")
        reviews = await timeline.wait_for_flows("coordinator_review", 1, timeout_s=90)
        say(f"  coordinator's call ended: {reviews[0].end}")
        deadline = time.monotonic() + 10
        while True:
            with session_scope(engine) as s:
                message = s.get(Message, run.message_id) if run.message_id else None
                decision = s.query(ReviewDecision).filter_by(message_id=run.message_id).first()
                status = message.status.value if message else None
                recording = next((r for r in message.recordings if r.take == message.submitted_take), None) \
                    if message else None
                coordinator = decision.person.name if decision and decision.person else None
                report_message = {
                    "id": run.message_id, "bin": lane.bin_number,
                    "urgency": message.urgency.value if message else None, "status": status,
                    "recording_seconds": round(recording.duration_s, 2) if recording else None,
                    # The stored file is sealed: the report names the verified plaintext copy.
                    "recording_path": str(open_recording(Path(recording.path), recording.sha256))
                    if recording else None,
                    "spoken_audio_path": str(spoken.resolve()), "spoken_text": spoken_text,
                }
                review = {"decision": decision.decision.value if decision else None, "coordinator": coordinator,
                          "seconds_hangup_to_ring": round(run.hangup_to_ring_s, 3)
                          if run.hangup_to_ring_s is not None else None,
                          "seconds_submit_to_ring": round(run.submit_to_ring_s, 3)
                          if run.submit_to_ring_s is not None else None}
            if status == "delivering" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        say(f"message {run.message_id}: {status}; decision {review['decision']} by {coordinator}")
        if recording is not None:
            match = locate_speech_file(spoken, open_recording(Path(recording.path), recording.sha256))
            report_message["match_ncc"] = round(match.peak_ncc, 4)
            say(f"  stored recording {recording.path}: {recording.duration_s:.2f} s, "
                f"correlation with what the officer said {match.peak_ncc:.4f}")
        ok = status in ("delivering", "done") and review["decision"] == "forward_now" and recording is not None
        campaign, expected = await _binfoon2(app, engine, run.message_id, people, say, choices)
        ok = ok and all(campaign.get(k) == v for k, v in expected.items())
        copies, copies_expected = await _copies(app, engine, run.message_id, people, choices, texts, say)
        expected.update(copies_expected)
        ok = ok and copies == copies_expected
        if recording is not None:
            report_message["transcript"] = await _transcript(app, engine, recording.id, spoken_text, say)
            # With a model in use the take must have its transcript; without one it is kept, untranscribed.
            ok = ok and (report_message["transcript"].get("engine") is not None
                         or report_message["transcript"].get("model_in_use") is False)
        with session_scope(engine) as s:
            report_message["status"] = s.get_one(Message, run.message_id).status.value
        return {"ok": ok, "message": report_message, "review": review, "campaign": campaign, "expected": expected,
                "database": engine.dialect.name, **copies}
    finally:
        if web is not None:
            await web.stop()
        await app.stop()
        await asyncio.to_thread(texts.stop)


async def _web_console(app: Any, say: Any) -> Any:
    """The web console on the demo's app (issue 7); a problem with it is told, never fails the demo."""
    try:
        from ivr.lab.web_demo import demo_console

        return await demo_console(app, say)
    except Exception as exc:
        say(f"web console not started: {exc}")
        return None


async def _binfoon2(app: Any, engine: Any, message_id: int | None, people: dict[int, Any],
                    say: Any, choices: dict[int, str]) -> tuple[dict[str, Any], dict[str, int]]:
    """BINFOON 2: every member is called with the original recording; wait for the final report."""
    from sqlalchemy import select

    from ivr.delivery.report import campaign_report
    from ivr.lab.scenarios import expected_counts
    from storage.db import session_scope
    from storage.models import Campaign
    from ivr.domain.vocabulary import CampaignStatus

    deadline = time.monotonic() + 600
    last = ""
    while True:
        with session_scope(engine) as s:
            campaign = s.scalars(select(Campaign).where(Campaign.message_id == message_id)).first()
            campaign_id = campaign.id if campaign else None
            done = campaign is not None and campaign.status is CampaignStatus.DONE
        if campaign_id is not None:
            report = campaign_report(engine, campaign_id, app.campaigns.policies, app.clock())
            counts = {k: v for k, v in report.counts().items() if v}
            line = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
            if line != last:
                say(f"  campaign {campaign_id}: {line}")
                last = line
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    # The demo's alert is urgent; text-only members are never called.
    called = {p: case for p, case in people.items() if choices[p] != TEXT_ONLY}
    scripted = expected_counts(called, app.campaigns.policies[True])
    scripted["members"], scripted["text_only"] = len(people), len(people) - len(called)
    counts = report.counts()
    measured = {"members": len(report.members), "confirmed": counts["confirmed"],
                "answering_machine": counts["answering_machine"], "no_answer": counts["no_answer"],
                "busy": counts["busy"], "answered_no_key": counts["answered_no_key"], "failed": counts["failed"],
                "text_only": counts.get("text_only", 0), "attempts": report.attempts,
                "calls_to_confirmed_members_after_confirming": report.calls_after_confirming}
    expected = {k: scripted.get(k, 0) for k in ("members", "confirmed", "answering_machine", "no_answer", "busy",
                                                "answered_no_key", "failed", "text_only", "attempts")}
    expected["calls_to_confirmed_members_after_confirming"] = 0
    say(f"  final report: {measured['confirmed']} of {measured['members']} members confirmed, "
        f"{measured['attempts']} calls; scripted: {expected}")
    return measured, expected


#: The demo's members' own channels, by position in the BIN (the rest chose nothing: the zone's default
#: for an urgent message, a call and an SMS).
TEXT_ONLY = "sms+email"
DEMO_CHANNELS: dict[range, str] = {range(11, 16): "voice", range(16, 19): TEXT_ONLY, range(19, 23): "voice+email",
                                   range(23, 26): "voice+sms+email"}
#: The contact ladder's delay in the demo.
LADDER_AFTER_S = 5.0


def _choose_channels(engine: Any, people: dict[int, Any]) -> dict[int, str]:
    """Give the demo's members their channels and e-mail addresses; returns person id -> channels
    ("default" for those who chose none)."""
    from storage.db import session_scope
    from storage.models import Person

    chosen: dict[int, str] = {}
    with session_scope(engine) as s:
        for position, person_id in enumerate(sorted(people), start=1):
            channels = next((c for r, c in DEMO_CHANNELS.items() if position in r), None)
            person = s.get_one(Person, person_id)
            person.channels = channels
            if channels is not None and "email" in channels:
                person.email = f"huishouden{position}@kerkwijk.demo.invalid"
            chosen[person_id] = channels or "default"
    return chosen


async def _copies(app: Any, engine: Any, message_id: int | None, people: dict[int, Any], choices: dict[int, str],
                  texts: Any, say: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The written copies: what the SMSC and the relay received, measured, beside what the members'
    channels and the scripts imply (SMS by choice, the ladder's SMS to every called member who did not
    confirm and had none, an e-mail with the original audio to every member with an address)."""
    from sqlalchemy import select

    from ivr.domain.vocabulary import CopyReason, CopyStatus
    from storage.db import session_scope
    from storage.models import Campaign, Confirmation, TextCopy

    sms_by_choice = {p for p, c in choices.items() if c == "default" or "sms" in c}
    email_wanted = {p for p, c in choices.items() if "email" in c}
    called = {p for p, c in choices.items() if c != TEXT_ONLY}
    ladder = {p for p in called - sms_by_choice if people[p].expected != "confirmed"}
    final = (CopyStatus.DELIVERED, CopyStatus.SENT, CopyStatus.FAILED, CopyStatus.BOUNCED, CopyStatus.CANCELLED)
    deadline = time.monotonic() + 180
    while True:
        with session_scope(engine) as s:
            campaign_id = s.scalar(select(Campaign.id).where(Campaign.message_id == message_id))
            copies = list(s.scalars(select(TextCopy).where(TextCopy.campaign_id == campaign_id)))
            confirmed = set(s.scalars(select(Confirmation.person_id).where(Confirmation.campaign_id == campaign_id)))
        sms = [c for c in copies if c.channel.value == "sms"]
        settled = len(sms) == len(sms_by_choice | ladder) and all(c.status in final for c in copies) \
            and all(c.status is not CopyStatus.SENT for c in sms)  # every SMS's delivery report is in
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    emails = [c for c in copies if c.channel.value == "email"]
    received = texts.kannel.messages
    mails = texts.smtp.messages
    with_audio = sum(1 for m in mails if any(part.get_content_type().startswith("audio/")
                                             for part in m.message.iter_attachments()))
    numbers = _first_numbers(engine, people)
    addresses = {p: f"huishouden{i}@kerkwijk.demo.invalid" for i, p in enumerate(sorted(people), start=1)}
    # Who received, as the SMSC and the relay saw it, against whom the channels and scripts name.
    sms_to_right_members = sorted(m.receiver for m in received) == sorted(numbers[p] for p in sms_by_choice | ladder)
    email_to_right_members = sorted(a for m in mails for a in m.rcpt_tos) == sorted(addresses[p] for p in email_wanted)
    measured = {
        "sms": {"copies": len(sms), "by_choice": sum(c.reason is not CopyReason.LADDER for c in sms),
                "ladder": sum(c.reason is CopyReason.LADDER for c in sms),
                "received_by_smsc": len(received),
                "delivered_reports": sum(c.status is CopyStatus.DELIVERED for c in sms),
                "to_the_right_members": sms_to_right_members},
        "email": {"copies": len(emails), "accepted_by_relay": len(mails), "with_audio": with_audio,
                  "sent": sum(c.status is CopyStatus.SENT for c in emails),
                  "to_the_right_members": email_to_right_members},
    }
    expected = {
        "sms": {"copies": len(sms_by_choice | ladder), "by_choice": len(sms_by_choice), "ladder": len(ladder),
                "received_by_smsc": len(sms_by_choice | ladder), "delivered_reports": len(sms_by_choice | ladder),
                "to_the_right_members": True},
        "email": {"copies": len(email_wanted), "accepted_by_relay": len(email_wanted), "with_audio": len(email_wanted),
                  "sent": len(email_wanted), "to_the_right_members": True},
    }
    if confirmed & ladder:
        say(f"  NOTE: {len(confirmed & ladder)} member(s) scripted not to confirm did confirm")
    say(f"  SMS: {measured['sms']['received_by_smsc']} at the SMSC ({measured['sms']['by_choice']} by choice, "
        f"{measured['sms']['ladder']} by the ladder), {measured['sms']['delivered_reports']} delivery reports; "
        f"e-mail: {measured['email']['accepted_by_relay']} accepted by the relay, {with_audio} with the audio; "
        f"expected {expected}")
    return measured, expected


def _first_numbers(engine: Any, people: dict[int, Any]) -> dict[int, str]:
    """Each member's primary number (where the demo's SMS go: they are all mobile)."""
    from sqlalchemy import select

    from ivr.domain.vocabulary import PhoneRank
    from storage.db import session_scope
    from storage.models import PhoneNumber

    with session_scope(engine) as s:
        return {p.person_id: p.e164 for p in s.scalars(select(PhoneNumber).where(
            PhoneNumber.person_id.in_(list(people)), PhoneNumber.rank == PhoneRank.PRIMARY))}
