"""A simulated public phone network: numbers whose behaviour is scripted, and people who call in.

The phones are reached exactly like real ones: through the dial template (``Local/${NUMBER}@sim-phone``
on the same Asterisk, or ``PJSIP/${NUMBER}@trunk`` into a second Asterisk that plays the network).
Either way the call lands in the ``sim-phone`` dialplan context, which hands it over FastAGI to
``PhoneNetwork.handle``; that coroutine *is* the phone: it rings, answers, presses keys, hangs up,
or plays an answering machine, and it records what it heard so a test can check the audio.

Simulated callers (a police officer phoning the police line) take the path a carrier's customer
takes: ``PhoneNetwork.place_call`` originates ``Local/<DID>@sim-carrier`` on the same Asterisk
(a switch that bridges the caller to ``Local/<DID>@binfoon-trunk-in``), or ``PJSIP/<DID>@carrier-in``
from the network's Asterisk across the real trunk, presenting the caller's number. Once BINfoon
answers, the caller's side runs the ``sim-caller`` context, which hands it over FastAGI to
``PhoneNetwork.handle_caller``: it plays the caller's ``CallerScript`` (listen to a prompt, press
keys, speak a WAV, wait, hang up) and records what the caller heard.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable

# The scripts and records live in their own modules; they are re-exported here, where tests import them.
from ivr.lab.callers import (
    CALLER_AGI_GRACE_S, DTMF_DURATION_MS, DTMF_QUIET_MS, LISTEN_NOISE_MS, CallerScript, HangUp, Listen,
    OutgoingCall, Press, Speak, Step, Wait, check_telephone_wav,
)
from ivr.lab.listening import EndListener, Reference
from ivr.lab.phones import (
    EAR_SUFFIX, HALLO_TEXT, Behaviour, Ear, KeyPress, Listening, PhoneScript, SimulatedCall, finished_wav,
    number_stem, render_hallo, render_machine_audio,
)
from ivr.media.compare import read_wav_mono
from ivr.telephony.agi import AgiCall, CallHungUp
from ivr.telephony.events import AmiEvent, ChannelHungUp

if TYPE_CHECKING:
    from ivr.telephony.ami import AmiGateway

__all__ = [
    "CALLER_AGI_GRACE_S", "DTMF_DURATION_MS", "DTMF_QUIET_MS", "HALLO_TEXT", "LISTEN_NOISE_MS",
    "LOCAL_INBOUND_TEMPLATE", "TRUNK_INBOUND_TEMPLATE", "Behaviour", "CallerScript", "HangUp", "KeyPress",
    "Listen", "Listening", "OutgoingCall", "PhoneNetwork", "PhoneScript", "Press", "SimulatedCall", "Speak",
    "Step", "Wait", "finished_wav", "number_stem",
]

log = logging.getLogger(__name__)

#: How simulated callers reach BINfoon (``${NUMBER}`` is the dialled DID): on the same Asterisk,
#: through the simulated carrier's switch into ``binfoon-trunk-in`` (see binfoon-simulator.conf), or
#: across the PJSIP trunk from the Asterisk that plays the network.
LOCAL_INBOUND_TEMPLATE = "Local/${NUMBER}@sim-carrier"
TRUNK_INBOUND_TEMPLATE = "PJSIP/${NUMBER}@carrier-in"
#: How often a listening phone reads its ear (Asterisk flushes it about every 0.34 s).
EAR_POLL_S = 0.15


class PhoneNetwork:
    """Scripted phones, served to Asterisk as the FastAGI route ``phone``."""

    def __init__(
        self,
        recordings_dir: Path,
        inner_path: Callable[[Path], str],
        *,
        ring_s: float = 4.0,
        owner: tuple[int, int] | None = None,
        caller_ami: "AmiGateway | None" = None,
        inbound_template: str = LOCAL_INBOUND_TEMPLATE,
    ) -> None:
        """``recordings_dir`` is a host directory Asterisk can write; ``inner_path`` maps it to
        Asterisk's view. ``ring_s`` is one ring cycle (Belgium: 1 s tone + 3 s pause).

        ``caller_ami`` is the AMI of the Asterisk hosting the phones (where callers' calls are
        originated); ``inbound_template`` how they reach BINfoon (``${NUMBER}`` is the DID)."""
        self.recordings_dir = recordings_dir
        self.inner_path = inner_path
        self.ring_s = ring_s
        self._owner = owner
        self._scripts: dict[str, PhoneScript] = {}
        self.calls: list[SimulatedCall] = []
        self._changed = asyncio.Condition()
        self._greeting: Path | None = None
        self._hallo: Path | None = None
        self.inbound_template = inbound_template
        #: Every call placed by a simulated caller, oldest first.
        self.outgoing: list[OutgoingCall] = []
        self._outgoing_by_id: dict[str, OutgoingCall] = {}
        self._caller_ami = caller_ami
        self._watchers: set[asyncio.Task[None]] = set()
        self._references: dict[Path, Reference] = {}
        #: Where a listening phone keeps its ear (what it heard) when it did not hear the recording to
        #: its end: a benchmark's unconfirmed calls, to replay through ``ivr.lab.listening``.
        self.keep_unheard_ears: Path | None = None
        if caller_ami is not None:
            caller_ami.subscribe(self._on_ami_event)

    def script(self, number: str, script: PhoneScript) -> None:
        """Give ``number`` a behaviour (numbers without one are not in service)."""
        self._scripts[number] = script

    def calls_to(self, number: str) -> list[SimulatedCall]:
        """Every call that reached ``number``, oldest first."""
        return [c for c in self.calls if c.number == number]

    async def wait_for_calls(self, number: str, count: int = 1, timeout_s: float = 30.0) -> list[SimulatedCall]:
        """Wait until ``count`` calls to ``number`` have ended; returns them."""
        async def ended() -> list[SimulatedCall]:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len([c for c in self.calls_to(number) if c.done.is_set()]) >= count
                )
            return self.calls_to(number)
        async with asyncio.timeout(timeout_s):
            return await ended()

    async def prepare(self) -> None:
        """Create the recordings directory and render the answering machine's greeting and beep."""
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        if self._owner is not None and os.geteuid() == 0:
            os.chown(self.recordings_dir, *self._owner)
        greeting = self.recordings_dir / "greeting.wav"
        beep = self.recordings_dir / "beep.wav"
        hallo = self.recordings_dir / "hallo.wav"
        loop = asyncio.get_running_loop()
        # Speech synthesis is CPU work: never on the event loop.
        with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
            await loop.run_in_executor(pool, render_machine_audio, greeting, beep)
            await loop.run_in_executor(pool, render_hallo, hallo)
        self._greeting = greeting
        self._hallo = hallo

    async def handle(self, call: AgiCall) -> None:
        """The FastAGI route: be the phone that was dialled."""
        number = call.args[0] if call.args else ""
        script = self._scripts.get(number, PhoneScript.unreachable())
        sim = SimulatedCall(number=number, script=script, channel=call.channel, started_at=time.monotonic(),
                            caller_id=call.caller_id, caller_id_name=call.caller_id_name)
        self.calls.append(sim)
        try:
            await self._behave(call, sim)
            if not call.hung_up:
                sim.ended_by = "phone"
        except CallHungUp:
            sim.ended_by = "caller"
        finally:
            sim.ended_at = time.monotonic()
            sim.done.set()
            async with self._changed:
                self._changed.notify_all()

    async def _behave(self, call: AgiCall, sim: SimulatedCall) -> None:
        script = sim.script
        behaviour = script.behaviour
        if behaviour is Behaviour.BUSY:
            await call.exec("Busy", "10")
            return
        if behaviour is Behaviour.CONGESTION:
            await call.exec("Congestion", "10")
            return
        if behaviour is Behaviour.UNREACHABLE:
            await call.exec("Hangup", "1")
            return
        if behaviour is Behaviour.NO_ANSWER:
            await call.exec("Ringing")
            await call.exec("Wait", "86400")
            return
        ring = f"{max(script.rings, 1) * self.ring_s:.3f}"
        if behaviour is Behaviour.ANSWERING_MACHINE:
            await call.exec("Ringing")
            await call.exec("Wait", ring)
        stem = f"{number_stem(sim.number)}-{len(self.calls)}-{int(time.time() * 1000)}"
        heard = self.recordings_dir / f"{stem}-heard.wav"
        if script.keeps_audio or behaviour is Behaviour.ANSWERING_MACHINE:
            sim.heard_path = heard
        ear_path = heard.with_name(stem + "-ear" + EAR_SUFFIX)  # a listening phone's (see sim-pick-up)
        if behaviour is Behaviour.ANSWERING_MACHINE:
            await call.answer()
        else:
            # Pick up and record only what reaches the phone (the "receive" direction) in one dialplan
            # step: BINfoon may speak at once, and an AGI round trip between the two would lose that.
            kept = [self.inner_path(heard.with_name(stem + "-both.wav")), self.inner_path(heard)] \
                if script.keeps_audio else ["", ""]
            # A listening phone: its ear, and Answer without waiting for the caller's audio (keys timed
            # from the answer keep the old pick-up, which waits up to 500 ms for it).
            ear = [self.inner_path(ear_path), "i"] if script.listening else ["", ""]
            # Rings and picks up in one dialplan step too: one AGI round trip, not three (on a loaded
            # benchmark each round trip made every call longer).
            await call.gosub("sim-ring-pick-up", "s", 1, ring, *kept, *ear)
        sim.answered_at = time.monotonic()
        if behaviour is Behaviour.ANSWERING_MACHINE:
            assert self._greeting is not None, "PhoneNetwork.prepare() was not awaited"
            await call.play(self.inner_path(self._greeting.with_suffix("")))
            await call.play(self.inner_path(self._greeting.with_name("beep")))
            # k: keep what was recorded when the caller hangs up (that is how messages end).
            await call.exec("Record", f"{self.inner_path(heard)},0,{script.record_max_s},qk")
            return
        if script.says_hallo:
            assert self._hallo is not None, "PhoneNetwork.prepare() was not awaited"
            await call.play(self.inner_path(self._hallo.with_suffix("")))
        if script.listening is not None:
            await self._listen_then_press(call, sim, script.listening, ear_path)
            return
        events: list[tuple[float, str]] = [(k.at_s, k.digits) for k in script.keys]
        if script.hangup_after_s is not None:
            events.append((script.hangup_after_s, ""))
        for at_s, digits in sorted(events, key=lambda e: e[0]):
            delay = sim.answered_at + at_s - time.monotonic()
            if delay > 0:
                await call.exec("Wait", f"{delay:.3f}")
            if not digits:
                await call.hangup()
                return
            # Logged before sending: the caller may hang up as soon as the key arrives.
            sim.keys_sent.append((time.monotonic() - sim.answered_at, digits))
            await call.exec("SendDTMF", digits, "250", "120")
        await call.exec("Wait", "86400")  # listen until the caller hangs up

    async def _listen_then_press(self, call: AgiCall, sim: SimulatedCall, listening: Listening,
                                 ear_path: Path) -> None:
        """Listen until the recording has been heard to its end, then press the key; hang up unpressed
        if that end is not heard in time (a broken playback never counts as confirmed). Then listen on
        until the caller hangs up, and press again each time the recording is heard to its end again, as
        a person does when the message starts over (a key the caller never took: its application died
        with the key on its way, and the dialplan's fallback plays the message again)."""
        assert sim.answered_at is not None
        reference = self._reference(listening.reference)
        ear = Ear(ear_path)
        try:
            listener = EndListener(reference)
            while listener.result is None:
                if time.monotonic() - sim.answered_at >= listening.timeout_s:
                    # Said here: handle() would take the hung-up AgiCall for the caller's doing.
                    sim.ended_by = "phone"
                    await call.hangup()
                    return
                await self._hear(call, ear, listener)
            sim.end_heard_at = time.monotonic()
            sim.end_heard_audio_s = listener.result.end_s
            while True:  # until the caller hangs up (CallHungUp)
                await call.exec("Wait", f"{listening.after_s:.3f}")
                sim.keys_sent.append((time.monotonic() - sim.answered_at, listening.key))
                await call.exec("SendDTMF", listening.key, "250", "120")
                listener = EndListener(reference)
                while listener.result is None:
                    await self._hear(call, ear, listener)
        finally:
            if sim.end_heard_at is None and self.keep_unheard_ears is not None:
                with contextlib.suppress(OSError):  # never there: the call ended before it was picked up
                    shutil.copy(ear_path, self.keep_unheard_ears / ear_path.name)
            ear.close()

    @staticmethod
    async def _hear(call: AgiCall, ear: Ear, listener: EndListener) -> None:
        """Wait a moment, then give the listener what the phone heard meanwhile."""
        # The AGI Wait paces the reads and notices a hang-up (CallHungUp) at once.
        await call.exec("Wait", f"{EAR_POLL_S:.3f}")
        samples = ear.read()
        if len(samples):
            listener.feed(samples)  # ~0.1 ms of CPU per read: fine on the event loop

    def _reference(self, path: Path) -> Reference:
        """The listening templates of a recording (read once per recording, shared by every phone)."""
        if path not in self._references:
            samples, rate = read_wav_mono(path)
            self._references[path] = Reference.of(samples, rate)
        return self._references[path]

    # -- simulated callers ------------------------------------------------------------------
    async def place_call(
        self,
        caller_number: str,
        script: CallerScript,
        number: str,
        *,
        ring_timeout_s: float = 30.0,
    ) -> OutgoingCall:
        """``caller_number`` phones ``number`` (a DID of BINfoon) and, once answered, plays ``script``.

        Returns when the call was answered (the script then runs on its own: ``await call.wait()``)
        or refused (``call.answered`` is False and ``call.done`` is set).
        """
        if self._caller_ami is None:
            raise RuntimeError("this phone network has no AMI to place calls with (caller_ami)")
        for step in script.steps:
            if isinstance(step, Speak):
                check_telephone_wav(step.wav)
        call_id = str(uuid.uuid4())
        out = OutgoingCall(call_id=call_id, number=number, caller_number=caller_number, script=script,
                           channel=self.inbound_template.replace("${NUMBER}", number),
                           started_at=time.monotonic())
        self.outgoing.append(out)
        self._outgoing_by_id[call_id] = out
        stem = f"caller-{number_stem(caller_number)}-{len(self.outgoing)}-{int(time.time() * 1000)}"
        out._recording = self.recordings_dir / f"{stem}-heard.wav"
        # The dialplan starts recording as it takes the answered call, before the script's AGI:
        # BINfoon may greet at once, and an AGI round trip first would lose that under load (seen in CI).
        variables = {"SIM_CALL": call_id, "SIM_HEARD": self.inner_path(out._recording),
                     "SIM_HEARD_BOTH": self.inner_path(out._recording.with_name(stem + "-both.wav"))}
        try:
            result = await self._caller_ami.originate(
                call_id, out.channel, context="sim-caller", variables=variables,
                caller_id=caller_number, timeout_s=ring_timeout_s,
            )
        except BaseException:
            await self._finish(out, None)
            raise
        out.result = result
        if result.success:
            if out.answered_at is None:
                out.answered_at = time.monotonic()
        elif not out._agi_started:
            await self._finish(out, "callee")
        return out

    async def wait_for_outgoing(self, call: OutgoingCall, timeout_s: float = 60.0) -> OutgoingCall:
        """Wait until ``call`` (from ``place_call``) is over; returns it."""
        return await call.wait(timeout_s)

    async def handle_caller(self, call: AgiCall) -> None:
        """The FastAGI route ``caller``: be the person who placed the call, now answered."""
        out = self._outgoing_by_id.get(call.args[0] if call.args else "")
        if out is None:
            log.error("simulated caller: unknown call %r on %s", call.args, call.channel)
            await call.hangup()
            return
        out._agi_started = True
        if out.answered_at is None:
            out.answered_at = time.monotonic()
        out.channel = call.channel
        steps = out.script.steps
        hung_up_by = "callee"
        out.heard_path = out._recording
        try:
            for step in steps:
                out._step_done(await self._perform(call, out, step))
                if isinstance(step, HangUp):
                    break
            else:
                await call.command("HANGUP")  # the implicit last step; CallHungUp: the callee was quicker
            hung_up_by = "caller"
        except CallHungUp:
            hung_up_by = "callee"
        finally:
            await self._finish(out, hung_up_by)

    async def _perform(self, call: AgiCall, out: OutgoingCall, step: Step) -> str:
        """Play one step of a caller's script; returns its label for ``steps_done``."""
        if isinstance(step, Listen):
            deadline = time.monotonic() + step.timeout_s
            # The prompt starts: some sound.
            if await self._wait_for_noise(call, step.timeout_s) != "NOISE":
                return "listen (nothing heard)"
            # The prompt ends: no sound for the silence asked for. Not WaitForSilence: while this
            # Asterisk transmits silence (transmit_silence), its own silence generator wakes the
            # channel every 20 ms, so a far end that sends no audio at all (BINfoon waiting for
            # keys) is never measured as silence. WaitForNoise's timeout is whole seconds.
            quiet_s = max(1, math.ceil(step.min_silence_ms / 1000))
            while await self._wait_for_noise(call, quiet_s) == "NOISE":
                if time.monotonic() >= deadline:
                    return "listen (timeout)"
            return step.label
        if isinstance(step, Press):
            # One SendDTMF per key: SendDTMF sleeps its gap after the last key too, and the prompt
            # that the key triggers would start unheard during that sleep. Each SendDTMF is
            # preceded by 100 ms of quiet (Asterisk's own), so the gap is made up to gap_ms.
            for i, digit in enumerate(step.digits):
                if i and step.gap_ms > DTMF_QUIET_MS:
                    await call.exec("Wait", f"{(step.gap_ms - DTMF_QUIET_MS) / 1000:.3f}")
                started = time.monotonic()
                try:
                    await call.exec("SendDTMF", digit, "1", str(DTMF_DURATION_MS))
                except CallHungUp:
                    # The callee may hang up as soon as the last key has arrived: that key was pressed.
                    sent_s = (DTMF_QUIET_MS + DTMF_DURATION_MS) / 1000
                    if i == len(step.digits) - 1 and time.monotonic() - started >= sent_s:
                        out._step_done(step.label)
                    raise
            return step.label
        if isinstance(step, Speak):
            sound = self._publish(step.wav)
            out.spoken.append(step.wav)
            await call.play(self.inner_path(sound.with_suffix("")))
            return step.label
        if isinstance(step, Wait):
            await call.exec("Wait", f"{step.seconds:.3f}")
            return step.label
        if isinstance(step, HangUp):
            await call.command("HANGUP")
            return step.label
        raise TypeError(f"not a caller step: {step!r}")

    @staticmethod
    async def _wait_for_noise(call: AgiCall, timeout_s: float) -> str:
        """``NOISE`` once ``LISTEN_NOISE_MS`` of sound is heard, ``TIMEOUT`` if none came in ``timeout_s``."""
        await call.exec("WaitForNoise", str(LISTEN_NOISE_MS), "1", str(max(1, math.ceil(timeout_s))))
        status = await call.get_variable("WAITSTATUS") or ""
        if status == "HANGUP":
            # app_waitforsilence reports some hang-ups only in WAITSTATUS, with result 0.
            call.hung_up = True
            raise CallHungUp(call.channel)
        return status

    def _publish(self, wav: Path) -> Path:
        """Copy ``wav`` where the network's Asterisk can read it (named by content); its host path."""
        data = wav.read_bytes()
        target = self.recordings_dir / f"speak-{hashlib.sha256(data).hexdigest()[:16]}.wav"
        if not target.exists():
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(data)
            partial.chmod(0o644)
            partial.replace(target)
        return target

    async def _finish(self, out: OutgoingCall, hung_up_by: str | None) -> None:
        if out.done.is_set():
            return
        out.hung_up_by = hung_up_by
        out.ended_at = time.monotonic()
        out.steps_skipped = len(out.script.steps) - len(out.steps_done)
        out.done.set()
        self._outgoing_by_id.pop(out.call_id, None)
        async with self._changed:
            self._changed.notify_all()

    def _on_ami_event(self, event: AmiEvent) -> None:
        # An answered call whose script never started (the callee hung up at once, or the
        # simulator's FastAGI was unreachable) must still end: give its AGI a moment, then close it.
        if not isinstance(event, ChannelHungUp):
            return
        out = self._outgoing_by_id.get(event.channel_id)
        if out is None or out._agi_started:
            return
        task = asyncio.get_running_loop().create_task(self._close_if_no_script(out))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _close_if_no_script(self, out: OutgoingCall) -> None:
        await asyncio.sleep(CALLER_AGI_GRACE_S)
        if not out._agi_started and out.answered_at is not None:
            await self._finish(out, "callee")

    async def close(self) -> None:
        """Stop watching calls (the lab calls this before it stops Asterisk)."""
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
