"""Simulated people phone in to BINfoon, as a carrier delivers calls: on one Asterisk (Local
channels into ``binfoon-trunk-in``) and across the real PJSIP trunk (G.711 RTP, RFC 4733 DTMF).

The police intake served here is a test-only stand-in for the real conversation: it records who
called, plays a prompt, reads a PIN up to ``#``, beeps and records a message up to ``#``.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.media.compare import hear_file, locate_file, read_wav_mono, speech_span
from ivr.media.tts import synthesize
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import CallerScript, HangUp, Listen, Press, Speak, Wait
from ivr.telephony.agi import AgiCall

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "audio" / "espeak-nl"
CLIP = SAMPLES / "01.wav"   # "Opgelet, verdachte personen in een grijze Volkswagen Golf ..."
OTHER = SAMPLES / "02.wav"  # "Er werd vannacht ingebroken in twee woningen ..."
OFFICER = "+32470123456"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A short spoken prompt and a 300 ms 1 kHz beep, 8 kHz mono WAVs."""
    folder = tmp_path_factory.mktemp("inbound-prompts")
    prompt = synthesize("Geef uw code in, gevolgd door het hekje.", "nl", folder / "prompt.wav")
    beep = folder / "beep.wav"
    with wave.open(str(beep), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        tone = (int(16000 * math.sin(2 * math.pi * 1000 * n / 8000)) for n in range(2400))
        out.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in tone))
    return prompt, beep


@dataclass
class Intake:
    """What the police intake saw of one call."""

    caller_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    prompt_started_at: float = 0.0
    digits: str | None = None
    recording: Path | None = None


def serve_police_intake(lab: PhoneLab, prompt: Path, beep: Path) -> "asyncio.Queue[Intake]":
    """The test-only ``police_intake`` route; each call's ``Intake`` is queued when the call ends."""
    seen: asyncio.Queue[Intake] = asyncio.Queue()
    prompt_sound = lab.publish_audio(prompt, "intake-prompt")
    beep_sound = lab.publish_audio(beep, "intake-beep")

    async def police_intake(call: AgiCall) -> None:
        intake = Intake(headers=dict(call.headers))
        try:
            intake.caller_id = await call.get_variable("CALLERID(num)")
            intake.prompt_started_at = time.monotonic()
            # GET DATA plays the prompt, then reads keys until '#' (10 s per key at most).
            result = await call.command(f"GET DATA {prompt_sound} 10000 20")
            intake.digits = str(result["result"][0])
            await call.play(beep_sound)
            target = lab.asterisk.spool_dir / f"police-{uuid.uuid4().hex}.wav"
            intake.recording = target
            # 3 s of silence or '#' ends it; k keeps the message if the officer hangs up instead.
            await call.exec("Record", lab.asterisk.runtime.inner_path(target), "3", "30", "qk")
            await call.hangup()
        finally:
            seen.put_nowait(intake)

    lab.app.add_route("police_intake", police_intake)
    return seen


def _span_s(path: Path) -> float:
    samples, rate = read_wav_mono(path)
    span = speech_span(samples, rate)
    assert span is not None, f"no speech in {path}"
    return span[1] - span[0]


async def test_an_officer_calls_the_police_line_types_a_pin_and_speaks_a_message(
    any_lab: PhoneLab, prompts: tuple[Path, Path]
) -> None:
    lab = any_lab
    prompt, beep = prompts
    seen = serve_police_intake(lab, prompt, beep)
    # The officer pauses before '#': Record drops the last 250 ms before the key that ends it, which
    # here would cut 0.15 s of the clip's own trailing silence, beyond what locate() lets overhang.
    script = CallerScript.of(Listen(), Press("4321#"), Listen(), Speak(CLIP), Wait(0.5), Press("#"))

    call = await (await lab.call_in(OFFICER, script)).wait(60)
    intake = await asyncio.wait_for(seen.get(), 10)

    # The carrier's path: the police line's DID, the officer's number as caller ID.
    assert call.answered and call.number == lab.police_line == "+3250000100"
    assert intake.caller_id == OFFICER and intake.headers["agi_callerid"] == OFFICER
    assert intake.headers["agi_network_script"] == "police_intake"
    if lab.network_asterisk is not None:
        assert intake.headers["agi_channel"].startswith("PJSIP/trunk-")  # it really came over SIP
        assert call.channel.startswith("PJSIP/carrier-in-")
    else:
        assert intake.headers["agi_channel"].startswith("Local/+3250000100@binfoon-trunk-in-")
        assert call.channel.startswith("Local/+3250000100@sim-carrier-")
    # The script ran to its end; the PIN arrived exactly (Local DTMF frames, or RFC 4733).
    assert [label for _, label in call.steps_done] == [
        "listen", "press 4321#", "listen", "speak 01.wav", "wait 0.5", "press #"]
    assert call.steps_skipped == 0 and call.spoken == [CLIP]
    assert intake.digits == "4321"
    # The first Listen ended soon after the prompt did (it waits ~1 s of quiet), not before.
    prompt_s = len(read_wav_mono(prompt)[0]) / 8000
    assert call.answered_at is not None
    listened_until = call.answered_at + call.steps_done[0][0]
    assert 0.0 < listened_until - (intake.prompt_started_at + prompt_s) < 2.0
    # The caller heard the prompt.
    heard = await asyncio.to_thread(call.heard_audio)
    assert hear_file(prompt, heard).whole

    # The message recorded on BINfoon's side is the clip the officer spoke.
    assert intake.recording is not None and intake.recording.exists()
    hearing = hear_file(CLIP, intake.recording)
    assert hearing.whole, hearing
    assert abs(_span_s(intake.recording) - _span_s(CLIP)) < 0.5
    # And the check can fail: other speech is not found in the recording.
    assert locate_file(OTHER, intake.recording).peak_ncc < 0.5


async def test_a_call_to_another_number_is_refused(any_lab: PhoneLab, prompts: tuple[Path, Path]) -> None:
    lab = any_lab
    seen = serve_police_intake(lab, *prompts)

    script = CallerScript.of(Listen(timeout_s=5))
    call = await (await lab.call_in(OFFICER, script, number="+3250000999")).wait(10)

    assert not call.answered and call.hung_up_by == "callee"
    assert call.steps_done == [] and call.steps_skipped == 1 and call.heard_path is None
    assert call.result is not None and call.result.cause == 21  # call rejected (SIP 403 over the trunk)
    assert seen.empty()  # the police intake never saw it


async def test_the_callee_hanging_up_mid_script_is_recorded(
    any_lab: PhoneLab, prompts: tuple[Path, Path]
) -> None:
    lab = any_lab
    prompt_sound = lab.publish_audio(prompts[0], "intake-prompt")
    keys: asyncio.Queue[str | None] = asyncio.Queue()

    async def police_intake(call: AgiCall) -> None:
        await call.play(prompt_sound)
        keys.put_nowait(await call.wait_for_digit(5))
        await call.hangup()  # after the first key, whatever the caller still meant to do

    lab.app.add_route("police_intake", police_intake)
    script = CallerScript.of(Listen(), Press("1"), Wait(10), Press("2"), HangUp())

    call = await (await lab.call_in(OFFICER, script)).wait(30)

    assert await asyncio.wait_for(keys.get(), 5) == "1"
    assert call.hung_up_by == "callee"
    assert [label for _, label in call.steps_done] == ["listen", "press 1"]
    assert call.steps_skipped == 3
    # The caller noticed at once, not after its 10 s wait.
    assert call.ended_at is not None and call.answered_at is not None
    assert call.ended_at - (call.answered_at + call.steps_done[-1][0]) < 3.0
