"""Originated calls to simulated phones, on one Asterisk and across a real PJSIP trunk."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from ivr.media.compare import hear_file, locate_file
from ivr.media.tts import synthesize
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import PhoneScript
from ivr.telephony.ami import AmiGateway
from ivr.telephony.events import DtmfReceived
from ivr.telephony.outcomes import DialOutcome, classify_dial
from tests.integration.conftest import listen_for_key

pytestmark = pytest.mark.integration


async def test_answered_call_delivers_key_1_to_python(lab: PhoneLab, dtmf_ami: AmiGateway) -> None:
    heard = listen_for_key(lab)
    attempt = str(uuid.uuid4())
    dtmf: asyncio.Queue[DtmfReceived] = asyncio.Queue()
    # The tests' own AMI user: the application's may not see keys (PINs).
    dtmf_ami.subscribe(lambda e: dtmf.put_nowait(e) if isinstance(e, DtmfReceived) else None)
    lab.network.script("+3291000001", PhoneScript.answers(rings=2, keys=((3.0, "1"),)))

    result = await lab.call("+3291000001", attempt_id=attempt)

    assert result.success and classify_dial(result.success, result.reason, result.cause) is DialOutcome.ANSWERED
    key = await asyncio.wait_for(heard.get(), 10)
    assert key.digit == "1"
    # Our attempt id is the channel's Uniqueid and reaches the flow as its argument.
    assert key.unique_id == attempt and key.args[0] == attempt and key.args[1] == "HUMAN"
    calls = await lab.network.wait_for_calls("+3291000001", 1)
    assert len(calls) == 1 and [d for _, d in calls[0].keys_sent] == ["1"]
    # The key also reached the (tests' own) AMI event stream, on our channel. AMI and AGI are two sockets, so the
    # event may come after the flow already has the key: wait for it rather than look once.
    async with asyncio.timeout(5):
        while not ((e := await dtmf.get()).digit == "1" and e.channel_id == attempt):
            pass


async def test_no_key_pressed_is_seen_as_none(lab: PhoneLab) -> None:
    heard = listen_for_key(lab, wait_s=1.5)
    lab.network.script("+3291000005", PhoneScript.silent())
    result = await lab.call("+3291000005")
    assert result.success
    assert (await asyncio.wait_for(heard.get(), 10)).digit is None


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (PhoneScript.busy(), DialOutcome.BUSY),
        (PhoneScript.never_answers(), DialOutcome.NO_ANSWER),
        (PhoneScript.congested(), DialOutcome.CONGESTION),
        (PhoneScript.unreachable(), DialOutcome.INVALID_NUMBER),
    ],
    ids=["busy", "no-answer", "congestion", "unreachable"],
)
async def test_unanswered_calls_are_told_apart(any_lab: PhoneLab, script: PhoneScript, expected: DialOutcome) -> None:
    lab = any_lab
    listen_for_key(lab)
    lab.network.script("+3292000001", script)

    result = await lab.call("+3292000001", ring_timeout_s=2.0)

    assert not result.success
    assert classify_dial(result.success, result.reason, result.cause) is expected
    # Exactly one call reached the phone: nothing was dialled twice.
    assert len(await lab.network.wait_for_calls("+3292000001", 1)) == 1


async def test_dtmf_and_speech_cross_the_pjsip_trunk(trunk_lab: PhoneLab, tmp_path: Path) -> None:
    lab = trunk_lab
    spoken = await asyncio.to_thread(
        synthesize, "Dit is een dringend bericht van de politie. Er zijn inbrekers actief in uw straat.",
        "nl", tmp_path / "alert.wav",
    )
    other = await asyncio.to_thread(synthesize, "Goedemiddag, de vergadering begint om acht uur.", "nl",
                                    tmp_path / "other.wav")
    heard = listen_for_key(lab, prompt=lab.publish_audio(spoken, "alert"))
    # The phone presses 1 after the whole alert has played.
    lab.network.script("+3293000001", PhoneScript.answers(keys=((7.0, "1"),)))

    result = await lab.call("+3293000001")

    assert result.success
    key = await asyncio.wait_for(heard.get(), 15)
    assert key.digit == "1"  # RFC 4733 over the trunk, back into Python
    call = (await lab.network.wait_for_calls("+3293000001", 1))[0]
    assert call.channel.startswith("PJSIP/carrier-in")  # it really came over SIP
    recording = await asyncio.to_thread(call.heard_audio)
    hearing = hear_file(spoken, recording)
    assert hearing.whole, hearing  # G.711 over RTP keeps the speech
    # And the check can fail: other speech is not found in what the phone heard.
    assert locate_file(other, recording).peak_ncc < 0.5
