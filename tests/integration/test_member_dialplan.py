"""The Asterisk side of the member call (dialplan/binfoon-member.conf), against a real Asterisk.

What the dialplan promises, whatever the application does:
- an answering machine hears the whole message: AMD, then a wait until its greeting and its beep
  are over, then the flow (AMDSTATUS=MACHINE) or, with the application down, the dialplan itself;
- a person who says "Hallo?" is not taken for a machine;
- with the application down, unreachable or dead mid-call, the dialplan delivers the message and
  a key 1 is written durably by Asterisk (CEL CSV, read with ivr.telephony.cel);
- with the application up, its own ``EXEC CELGenUserEvent`` (or the dialplan's confirmation
  subroutine) writes the same durable row.

The flow here is a stand-in that keeps the application's contract (the real one is
ivr/delivery/member_call.py): header and recording over STREAM FILE, a key, on 1 the CEL user event
and BINFOON_DONE=1.

Measured here (Asterisk 22.10.1, espeak-ng speech, amd.conf as committed):
- a person who says "Hallo?" (0.4 s of speech): HUMAN in 5 of 5 calls (HUMAN-1012-1000), the flow
  starts 1.4 s after the answer, i.e. 1.0 s of silence after "Hallo?"; one who says nothing:
  MACHINE/INITIALSILENCE after 3.5 s, handed to the flow as NOTSURE;
- the simulated machine (5.7 s greeting, 0.5 s beep): MACHINE (LONGGREETING-2500), the flow starts
  8.6 s after the answer, 2.0 s after the end of the beep, on Local channels and over PJSIP alike;
- 11 typical Flemish answers and greetings (espeak-ng, pauses put in): 10 told apart with these
  values, 8 with Asterisk's sample values (1500/800). Right: "Hallo?", "Ja, hallo?", "Met Peeters.",
  "Hallo, met Jan Peeters.", "Goedemiddag, met de familie Janssens." (a machine for the sample
  values), "Hallo?" after 1.2 s of silence; greetings: the simulated one, an operator's, one that
  reads a number digit by digit, "Hallo, met Jan." + 0.9 s + "Ik ben er even niet..." (a person
  for the sample values). Wrong: "Jan hier." + 0.9 s + "Laat maar een berichtje achter." (2 s of
  speech, then silence: a person for any timing-based detection).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ivr.media.compare import hear_file, hear_twice, locate_file, read_wav_mono
from ivr.media.tts import synthesize
from ivr.lab.phone_lab import PhoneLab
from ivr.lab.network import PhoneScript, SimulatedCall
from ivr.telephony.agi import AgiCall
from ivr.telephony.cel import CelConfirmation, cel_csv_path, read_confirmations
from ivr.telephony.events import AmiEvent, UserEventReceived
from tests.conftest import SHARED_DIR
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


CLIP = SHARED_DIR / "audio" / "espeak-nl" / "08.wav"
OTHER_CLIP = SHARED_DIR / "audio" / "espeak-nl" / "05.wav"
TEXTS = {
    "header": "Dit is een dringend BIN-bericht van de politie.",
    "keys": "Druk één om te bevestigen, of twee om het bericht opnieuw te horen.",
    "thanks": "Dank u. Uw bevestiging is genoteerd.",
}
#: From answer to the end of AMD for a person who says "Hallo?" (measured about 1.4 s).
HUMAN_AMD_S = 1.5


@dataclass(frozen=True)
class Prompts:
    header: Path
    keys: Path
    thanks: Path

    def seconds(self, name: str) -> float:
        samples, rate = read_wav_mono(getattr(self, name) if name != "clip" else CLIP)
        return len(samples) / rate


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Prompts:
    folder = tmp_path_factory.mktemp("member-prompts")
    return Prompts(**{name: synthesize(text, "nl", folder / f"{name}.wav") for name, text in TEXTS.items()})


def member_variables(lab: PhoneLab, prompts: Prompts, **extra: str) -> dict[str, str]:
    """The Originate variables of the contract, with the sounds published where Asterisk reads them."""
    return {
        "BINFOON_SOUND": lab.publish_audio(CLIP, "recording"),
        "BINFOON_HEADER": lab.publish_audio(prompts.header, "header"),
        "BINFOON_KEYS": lab.publish_audio(prompts.keys, "keys"),
        "BINFOON_THANKS": lab.publish_audio(prompts.thanks, "thanks"),
        **extra,
    }


def closed_agi() -> str:
    """A FastAGI address where nothing listens: the application is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"agi://127.0.0.1:{port}"


@dataclass
class FlowCall:
    """What the stand-in flow saw of one call."""

    attempt_id: str
    amd_status: str
    amd_cause: str | None
    started_at: float
    key: str | None = None


@dataclass
class StandInFlow:
    """``member_call`` keeping the application's contract; ``crash_after_header`` returns early
    without BINFOON_DONE (the application died mid-call)."""

    lab: PhoneLab
    variables: dict[str, str]
    #: How the flow records a confirmation, per attempt id: ``exec`` (EXEC CELGenUserEvent, the
    #: default) or ``gosub`` (the dialplan's binfoon-member-confirm subroutine).
    confirm_with: dict[str, str] = field(default_factory=dict)
    crash_after_header: bool = False
    #: Take the member's key, then return without BINFOON_DONE (the application died with the key).
    dies_with_the_key: bool = False
    #: Only note AMD's verdict and end the call.
    verdict_only: bool = False
    calls: list[FlowCall] = field(default_factory=list)

    def serve(self) -> "StandInFlow":
        self.lab.app.add_route("member_call", self.member_call)
        return self

    async def member_call(self, call: AgiCall) -> None:
        attempt_id, amd_status = (call.args + ["", ""])[:2]
        seen = FlowCall(attempt_id, amd_status, await call.get_variable("AMDCAUSE"), time.monotonic())
        self.calls.append(seen)
        if self.verdict_only:
            await call.set_variable("BINFOON_DONE", "1")
            await call.hangup()
            return
        await call.play(self.variables["BINFOON_HEADER"])
        if self.crash_after_header:
            return
        key = await call.play(self.variables["BINFOON_SOUND"], "12")
        if amd_status == "MACHINE":
            await call.set_variable("BINFOON_DONE", "1")
            await call.hangup()
            return
        if key is None:
            key = await call.play(self.variables["BINFOON_KEYS"], "12") or await call.wait_for_digit(6)
        seen.key = key
        if self.dies_with_the_key:
            return
        if key == "1":
            if self.confirm_with.get(attempt_id) == "gosub":
                await call.command(f"GOSUB binfoon-member-confirm s 1 {attempt_id}")
            else:
                await call.exec("CELGenUserEvent", "BINFOON_CONFIRM", attempt_id)
            await call.set_variable("BINFOON_DONE", "1")
            await call.play(self.variables["BINFOON_THANKS"])
        else:
            await call.set_variable("BINFOON_DONE", "1")
        await call.hangup()


def user_events(lab: PhoneLab) -> list[UserEventReceived]:
    events: list[UserEventReceived] = []

    def keep(event: AmiEvent) -> None:
        if isinstance(event, UserEventReceived):
            events.append(event)

    lab.ami.subscribe(keep)
    return events


async def events_named(events: list[UserEventReceived], name: str, count: int,
                       wait_s: float = 5.0) -> list[UserEventReceived]:
    """The user events called ``name`` once ``count`` have come, or at the deadline (AMI is another
    socket than the phone's: an event can come after the call looks over)."""
    return await eventually(lambda: [e for e in events if e.name == name],
                            lambda found: len(found) >= count, wait_s)


async def cel_confirmations(lab: PhoneLab, attempt_id: str | None = None,
                            wait_s: float = 5.0) -> list[CelConfirmation]:
    """Every confirmation in the instance's CEL CSV (CEL is written asynchronously: give it a moment
    when ``attempt_id`` is expected)."""
    def has_it(found: list[CelConfirmation]) -> bool:
        return attempt_id is None or any(c.attempt_id == attempt_id for c in found)

    return await eventually(lambda: read_confirmations(cel_csv_path(lab.asterisk), 0)[0], has_it, wait_s,
                            poll_s=0.1)


async def call_member(lab: PhoneLab, number: str, script: PhoneScript, variables: dict[str, str],
                      timeout_s: float = 90.0, attempt_id: str | None = None) -> tuple[str, SimulatedCall]:
    """Dial ``number`` (scripted ``script``) into binfoon-member; returns the attempt id and the
    phone's side of the call once it is over."""
    lab.network.script(number, script)
    before = len(lab.network.calls_to(number))
    attempt_id = attempt_id or str(uuid.uuid4())
    result = await lab.call(number, attempt_id=attempt_id, variables=variables)
    assert result.success, result
    calls = await lab.network.wait_for_calls(number, before + 1, timeout_s=timeout_s)
    return attempt_id, calls[-1]


def assert_whole_message(recording: Path, prompts: Prompts) -> None:
    """The header and the whole police recording, in that order, and nothing else instead."""
    header = hear_file(prompts.header, recording)
    clip = hear_file(CLIP, recording)
    assert header.whole, header  # the start of the message was not cut
    assert clip.whole, clip      # first to last word of the police's recording
    assert header.lag_s is not None and clip.lag_s is not None and header.lag_s < clip.lag_s
    assert locate_file(OTHER_CLIP, recording).peak_ncc < 0.5  # and the check can fail


# -- answering machines -----------------------------------------------------------------------
async def test_an_answering_machine_records_the_whole_message(any_lab: PhoneLab, prompts: Prompts) -> None:
    lab = any_lab
    flow = StandInFlow(lab, member_variables(lab, prompts)).serve()

    machine = PhoneScript.answering_machine(rings=1)
    attempt_id, call = await call_member(lab, "+3294000001", machine, flow.variables)

    [seen] = flow.calls
    assert (seen.attempt_id, seen.amd_status) == (attempt_id, "MACHINE")
    # The flow starts only once the greeting and the beep are over.
    assert call.answered_at is not None
    greeting, rate = read_wav_mono(lab.network.recordings_dir / "greeting.wav")
    beep_end_s = len(greeting) / rate + 0.5
    print(f"machine: AMD {seen.amd_cause}; the flow started {seen.started_at - call.answered_at:.2f} s after "
          f"answer, {seen.started_at - call.answered_at - beep_end_s:.2f} s after the end of the beep")
    assert seen.started_at - call.answered_at >= beep_end_s
    assert_whole_message(await asyncio.to_thread(call.heard_audio), prompts)
    assert await cel_confirmations(lab, wait_s=0) == []  # a machine confirms nothing


async def test_with_the_app_down_the_dialplan_leaves_the_message_on_the_machine(
        lab: PhoneLab, prompts: Prompts) -> None:
    events = user_events(lab)
    variables = member_variables(lab, prompts, BINFOON_AGI=closed_agi())

    machine = PhoneScript.answering_machine(rings=1)
    attempt_id, call = await call_member(lab, "+3294000002", machine, variables)

    assert_whole_message(await asyncio.to_thread(call.heard_audio), prompts)
    assert call.ended_by == "caller"  # the dialplan hung up after the message
    failed = await events_named(events, "BinfoonAgiFailed", 1)
    assert [(e.fields.get("Attempt"), e.fields.get("AgiStatus")) for e in failed] == [(attempt_id, "FAILURE")]


# -- people -----------------------------------------------------------------------------------
async def test_a_person_who_says_hallo_is_not_taken_for_a_machine(lab: PhoneLab, prompts: Prompts) -> None:
    assert PhoneScript.answers().says_hallo and PhoneScript.hangs_up_after(2.0).says_hallo
    assert not PhoneScript.silent().says_hallo
    flow = StandInFlow(lab, member_variables(lab, prompts), verdict_only=True).serve()
    calls = 5
    for _ in range(calls):
        await call_member(lab, "+3294000003", PhoneScript.answers(), flow.variables)
    verdicts = [c.amd_status for c in flow.calls]
    print(f"people who say Hallo?: {verdicts.count('HUMAN')}/{calls} HUMAN, causes "
          f"{sorted({c.amd_cause or '' for c in flow.calls})}, flow started "
          f"{[round(c.started_at - s.answered_at, 2) for c, s in zip(flow.calls, lab.network.calls)]} s "
          "after answer")
    assert verdicts == ["HUMAN"] * calls
    # Someone who says nothing at all is no machine either: the flow may ask them for a key.
    await call_member(lab, "+3294000004", PhoneScript.silent(), flow.variables)
    silent = flow.calls[-1]
    assert silent.amd_status == "NOTSURE" and (silent.amd_cause or "").startswith("INITIALSILENCE")


# -- the application down, or dead mid-call: the dialplan's own conversation --------------------
async def test_with_the_app_down_a_person_confirms_durably(lab: PhoneLab, prompts: Prompts) -> None:
    events = user_events(lab)
    variables = member_variables(lab, prompts, BINFOON_AGI=closed_agi())
    press_at = HUMAN_AMD_S + prompts.seconds("header") + prompts.seconds("clip") + 1.0
    start = time.time()

    person = PhoneScript.answers(keys=((press_at, "1"),))
    attempt_id, call = await call_member(lab, "+3294000005", person, variables)

    # "Hallo?" did not shift the key: it is still timed from the answer.
    assert [d for _, d in call.keys_sent] == ["1"] and abs(call.keys_sent[0][0] - press_at) < 0.3
    [confirmation] = await cel_confirmations(lab, attempt_id)
    assert confirmation.attempt_id == confirmation.uniqueid == attempt_id
    assert start - 1 <= confirmation.at.timestamp() <= time.time()
    assert [e.fields.get("Attempt") for e in await events_named(events, "BinfoonConfirm", 1)] == [attempt_id]
    heard = await asyncio.to_thread(call.heard_audio)
    assert_whole_message(heard, prompts)
    assert hear_file(prompts.thanks, heard).whole
    assert call.ended_by == "caller"


async def test_app_dying_mid_call_leaves_it_to_the_dialplan(lab: PhoneLab, prompts: Prompts) -> None:
    flow = StandInFlow(lab, member_variables(lab, prompts), crash_after_header=True).serve()
    events = user_events(lab)
    header_s = prompts.seconds("header")
    press_at = HUMAN_AMD_S + 2 * header_s + prompts.seconds("clip") + 1.0

    attempt_id, call = await call_member(lab, "+3294000006", PhoneScript.answers(keys=((press_at, "1"),)),
                                         flow.variables)

    assert [(c.attempt_id, c.amd_status) for c in flow.calls] == [(attempt_id, "HUMAN")]
    assert [e.fields.get("AgiStatus") for e in await events_named(events, "BinfoonAgiFailed", 1)] == ["SUCCESS"]
    [confirmation] = await cel_confirmations(lab, attempt_id)
    assert confirmation.attempt_id == attempt_id
    assert hear_file(prompts.thanks, await asyncio.to_thread(call.heard_audio)).whole


async def test_a_key_lost_with_the_app_is_pressed_again_when_the_dialplan_plays_the_message_again(
        lab: PhoneLab, prompts: Prompts) -> None:
    # The application took the key and died before storing it: the dialplan's fallback plays the
    # message again, and a listening member (who heard it to its end again) presses 1 again.
    flow = StandInFlow(lab, member_variables(lab, prompts), dies_with_the_key=True).serve()
    events = user_events(lab)

    attempt_id, call = await call_member(lab, "+3294000009", PhoneScript.listens(CLIP, timeout_s=60.0),
                                         flow.variables)

    assert [(c.attempt_id, c.key) for c in flow.calls] == [(attempt_id, "1")]
    assert [e.fields.get("AgiStatus") for e in await events_named(events, "BinfoonAgiFailed", 1)] == ["SUCCESS"]
    assert [d for _, d in call.keys_sent] == ["1", "1"]
    [confirmation] = await cel_confirmations(lab, attempt_id)
    assert confirmation.attempt_id == attempt_id
    assert call.ended_by == "caller"


async def test_with_the_app_down_no_key_means_no_confirmation(lab: PhoneLab, prompts: Prompts) -> None:
    variables = member_variables(lab, prompts, BINFOON_AGI=closed_agi())
    # 2 during the keys prompt: the recording again; then nothing, and the dialplan gives up.
    replay_at = HUMAN_AMD_S + prompts.seconds("header") + prompts.seconds("clip") + 1.0

    _, call = await call_member(lab, "+3294000007", PhoneScript.answers(keys=((replay_at, "2"),)), variables)

    assert await cel_confirmations(lab, wait_s=1.0) == []
    assert call.ended_by == "caller" and call.ended_at is not None and call.answered_at is not None
    # Two recordings and three keys prompts of at most 6 s of waiting each, then the line drops.
    assert call.ended_at - call.answered_at <= (replay_at + prompts.seconds("clip")
                                                + 3 * (prompts.seconds("keys") + 6) + 5)
    # The recording twice: whole where it fits best, and whole again in the rest of the call.
    heard, rate = read_wav_mono(await asyncio.to_thread(call.heard_audio))
    clip, _ = read_wav_mono(CLIP)
    first, again = hear_twice(clip, heard, rate)
    assert first.whole and again is not None, (first, again)


# -- the application up: its own confirmation is durable too ------------------------------------
async def test_the_apps_own_confirmation_lands_in_the_cel_file(lab: PhoneLab, prompts: Prompts) -> None:
    flow = StandInFlow(lab, member_variables(lab, prompts)).serve()
    events = user_events(lab)
    press_at = HUMAN_AMD_S + prompts.seconds("header") + prompts.seconds("clip") + 1.0
    by_exec, by_gosub, no_key = (str(uuid.uuid4()) for _ in range(3))
    flow.confirm_with[by_gosub] = "gosub"

    # Three members at once: two confirm (each way the application may use), one presses 3,
    # no key the flow listens for: no row for them.
    await asyncio.gather(
        call_member(lab, "+3294000008", PhoneScript.answers(keys=((press_at, "1"),)), flow.variables,
                    attempt_id=by_exec),
        call_member(lab, "+3294000009", PhoneScript.answers(keys=((press_at, "1"),)), flow.variables,
                    attempt_id=by_gosub),
        call_member(lab, "+3294000010", PhoneScript.answers(keys=((press_at, "3"),)), flow.variables,
                    attempt_id=no_key),
    )

    assert {(c.attempt_id, c.key) for c in flow.calls} == {(by_exec, "1"), (by_gosub, "1"), (no_key, None)}
    await cel_confirmations(lab, by_exec)
    await cel_confirmations(lab, by_gosub)
    found = await cel_confirmations(lab, wait_s=0.5)
    assert sorted((c.attempt_id, c.uniqueid) for c in found) == sorted([(by_exec,) * 2, (by_gosub,) * 2])
    # Only the subroutine also tells AMI at once; the application knows it already anyway.
    assert [e.fields.get("Attempt") for e in await events_named(events, "BinfoonConfirm", 1)] == [by_gosub]
    # The application finished every call: the dialplan's fallback never ran.
    assert [e for e in events if e.name == "BinfoonAgiFailed"] == []
