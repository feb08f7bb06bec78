"""The police-line conversation against the fake call and a real database (SQLite)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import func, select

from ivr.police_line.flow import IntakeEnd, IntakeRules, police_intake
from storage.audit import verify_chain
from storage.db import session_scope
from storage.models import AuditEntry, Message, PinAttempt, Recording
from ivr.domain.vocabulary import MessageStatus, Urgency
from tests.conftest import SHARED_DIR
from tests.steps import StepLog
from tests.fakes import HANG_UP, FakeCall, Speak
from tests.conftest import Clock
from tests.world import OFFICER_PHONE, OFFICER_PIN, OTHER_ZONE_BIN, World, silence_wav
from storage.recordings import open_recording

SPEECH = SHARED_DIR / "audio" / "espeak-nl" / "01.wav"
RULES = IntakeRules(key_timeout_s=1.0)


def _messages(world: World) -> list[Message]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(Message).order_by(Message.id)))


def _recordings(world: World) -> list[Recording]:
    with session_scope(world.engine) as s:
        return list(s.scalars(select(Recording).order_by(Recording.id)))


async def _run(world: World, script: list[object], tmp_path: Path, caller: str = OFFICER_PHONE,
               after: StepLog | None = None) -> tuple[IntakeEnd, FakeCall]:
    call = FakeCall(script, tmp_path, caller_id=caller)
    after = after or StepLog()
    try:
        end = await police_intake(call, world.desk, RULES, after)
    except Exception as exc:  # a hang-up mid-way propagates as CallHungUp, like on a real call
        if type(exc).__name__ != "CallHungUp":
            raise
        end = None  # type: ignore[assignment]
    call.submitted = after.submissions  # type: ignore[attr-defined]
    return end, call


async def test_happy_path_stores_the_recording_and_submits(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH), "3"], tmp_path)

    assert end is IntakeEnd.SENT
    assert call.said[:3] == ["police_enter_pin", "police_enter_bin", "police_bin_chosen"]
    assert call.values[2] == {"number": 12, "name": "Kerkwijk"}
    assert call.said[-1] == "police_sent" and call.hung_up
    [message] = _messages(world)
    assert message.status is MessageStatus.RECORDED and message.urgency is Urgency.URGENT
    assert message.submitted_take == 1 and message.created_by_id == world.officer_id
    assert call.submitted == [message.id]  # type: ignore[attr-defined]
    [recording] = _recordings(world)
    # The stored file is the recorded audio, byte for byte, with its checksum (sealed at rest).
    assert open_recording(Path(recording.path), recording.sha256).read_bytes() == SPEECH.read_bytes()
    assert recording.speech_s > 3.0 and recording.end_reason == "dtmf"
    assert oct(Path(recording.path).stat().st_mode & 0o777) == "0o600"


async def test_listen_then_speak_again_keeps_every_take_and_sends_the_last(world: World, tmp_path: Path) -> None:
    other = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
    end, call = await _run(world, [OFFICER_PIN, "12", "1", "2", Speak(SPEECH), "1", "2", Speak(other), "3"],
                           tmp_path)
    assert end is IntakeEnd.SENT
    [message] = _messages(world)
    assert message.urgency is Urgency.PREVENTIVE and message.submitted_take == 2
    takes = _recordings(world)
    assert [r.take for r in takes] == [1, 2]
    # "1" played the first take back (its verified plaintext copy: the stored file is sealed)
    assert call.played == [open_recording(Path(takes[0].path), takes[0].sha256)]
    with session_scope(world.engine) as s:
        played = s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "recording.played"))
    assert played == 1


async def test_every_take_is_announced_as_soon_as_it_is_stored_sent_or_not(world: World, tmp_path: Path) -> None:
    # Transcription starts from this step (issue 6): when a take is stored, not when it is sent.
    other = SHARED_DIR / "audio" / "espeak-nl" / "02.wav"
    announced: list[tuple[int, int, bool]] = []

    class Chain(StepLog):
        def take_kept(self, message_id: int, recording_id: int | None) -> None:
            assert recording_id is not None
            with session_scope(world.engine) as s:  # committed: a worker thread can read it already
                assert s.get(Recording, recording_id) is not None
                sent = s.get_one(Message, message_id).submitted_at is not None
            announced.append((message_id, recording_id, sent))

    chain = Chain()
    await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH), "2", Speak(other), "3"], tmp_path, after=chain)
    await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH, "hangup")], tmp_path, after=chain)  # never sent
    assert announced == [(r.message_id, r.id, False) for r in _recordings(world)]
    assert len(announced) == 3


async def test_wrong_pin_three_times_locks_account_and_caller(world: World, tmp_path: Path, clock: Clock) -> None:
    end, call = await _run(world, ["1111", "2222", "3333"], tmp_path)
    assert end is IntakeEnd.LOCKED
    assert call.said == ["police_enter_pin", "police_pin_wrong", "police_enter_pin", "police_pin_wrong",
                         "police_enter_pin", "police_locked"]
    # Locked: the right PIN from the same caller ID is not even checked.
    end, call = await _run(world, [OFFICER_PIN], tmp_path)
    assert end is IntakeEnd.LOCKED and call.said == ["police_locked"]
    # The PIN alone is never enough: from a number that is not the officer's it is refused.
    end, call = await _run(world, [OFFICER_PIN], tmp_path, caller="+32476999999")
    assert end is None and call.said == ["police_enter_pin", "police_pin_wrong", "police_enter_pin"]
    with session_scope(world.engine) as s:
        outcomes = [a.outcome.value for a in s.scalars(select(PinAttempt).order_by(PinAttempt.id))]
        actions = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
        assert verify_chain(s) == []
    assert outcomes == ["wrong", "wrong", "wrong", "wrong"]
    assert actions.count("police.pin_wrong") == 4 and actions.count("police.locked") == 1
    assert actions.count("police.call_refused_locked") == 1  # the locked caller was not asked for a PIN
    # After 15 minutes the right PIN works again.
    clock.now += dt.timedelta(minutes=15, seconds=1)
    end, _ = await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH), "3"], tmp_path)
    assert end is IntakeEnd.SENT


async def test_unknown_caller_is_refused_like_a_wrong_pin(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, OFFICER_PIN, OFFICER_PIN], tmp_path, caller="+32470111222")
    assert end is IntakeEnd.LOCKED
    assert call.said.count("police_pin_wrong") == 2
    assert _messages(world) == []


async def test_unknown_bin_and_other_zone_are_told(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, "777", str(OTHER_ZONE_BIN), "12", "1", "1", Speak(SPEECH), "3"],
                           tmp_path)
    assert end is IntakeEnd.SENT
    assert "police_bin_unknown" in call.said and "police_bin_other_zone" in call.said


async def test_silence_only_is_not_a_message(world: World, tmp_path: Path) -> None:
    quiet = silence_wav(tmp_path / "quiet.wav")
    end, call = await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(quiet, "silence"), Speak(SPEECH), "3"],
                           tmp_path)
    assert end is IntakeEnd.SENT
    assert "police_recording_empty" in call.said
    takes = _recordings(world)
    assert [r.speech_s == 0 for r in takes] == [True, False]  # the silent take is kept, marked silent
    assert _messages(world)[0].submitted_take == 2


async def test_recording_over_the_maximum_is_told_and_can_still_be_sent(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH, "max_duration"), "3"], tmp_path)
    assert end is IntakeEnd.SENT and "police_recording_too_long" in call.said


async def test_hang_up_while_speaking_keeps_a_draft_never_sent(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH, "hangup")], tmp_path)
    assert end is IntakeEnd.DRAFT_KEPT
    [message] = _messages(world)
    assert message.status is MessageStatus.DRAFT and message.submitted_at is None
    assert call.submitted == []  # type: ignore[attr-defined]
    [recording] = _recordings(world)
    assert open_recording(Path(recording.path), recording.sha256).read_bytes() == SPEECH.read_bytes()  # nothing lost


async def test_hang_up_at_the_menu_keeps_a_draft(world: World, tmp_path: Path) -> None:
    await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH), HANG_UP], tmp_path)
    [message] = _messages(world)
    assert message.status is MessageStatus.DRAFT
    assert len(_recordings(world)) == 1


async def test_keys_that_mean_nothing_are_told_and_asked_again(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, "12", "7", "1", "5", "1", Speak(SPEECH), "8", "3"], tmp_path)
    assert end is IntakeEnd.SENT
    assert call.said.count("invalid_choice") == 3


async def test_no_keys_at_all_ends_politely_without_a_message(world: World, tmp_path: Path) -> None:
    end, call = await _run(world, [OFFICER_PIN, "12", "1", None, None, None], tmp_path)
    assert end is IntakeEnd.NO_MESSAGE and call.said[-1] == "no_input_goodbye"
    assert _messages(world) == []


async def test_star_cancels(world: World, tmp_path: Path) -> None:
    end, _ = await _run(world, [OFFICER_PIN, "12", "1", "1", Speak(SPEECH), "*"], tmp_path)
    assert end is IntakeEnd.CANCELLED
    assert _messages(world)[0].status is MessageStatus.CANCELLED
