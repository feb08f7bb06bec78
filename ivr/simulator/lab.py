"""A phone lab: a private Asterisk wired to the app's FastAGI server, an AMI gateway and the
simulated phone network. Used by the tests, the demo and the benchmarks alike.

Two shapes:
- ``over_pjsip=False``: one Asterisk; phones are reached with ``Local/${NUMBER}@sim-phone``.
- ``over_pjsip=True``: a second Asterisk plays the public network behind a real PJSIP trunk on
  loopback (G.711 RTP media, RFC 4733 DTMF); phones are reached with ``PJSIP/${NUMBER}@trunk``,
  exactly as in production.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path

from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions
from ivr.simulator.network import PhoneNetwork
from ivr.telephony.agi import AgiServer
from ivr.telephony.ami import AmiGateway
from ivr.telephony.events import OriginateResult

LOCAL_TEMPLATE = "Local/${NUMBER}@sim-phone"
TRUNK_TEMPLATE = "PJSIP/${NUMBER}@trunk"


@dataclass
class PhoneLab:
    """Everything needed to place real calls to simulated phones."""

    asterisk: AsteriskInstance
    network_asterisk: AsteriskInstance | None
    app: AgiServer
    network: PhoneNetwork
    ami: AmiGateway
    dial_template: str
    _sim_server: AgiServer

    @classmethod
    async def start(
        cls,
        runtime: AsteriskRuntime,
        base_dir: Path,
        *,
        name: str | None = None,
        over_pjsip: bool = False,
        ring_s: float = 0.5,
        caller_id_number: str = "+3250000000",
    ) -> "PhoneLab":
        """Start the lab's servers and Asterisk instance(s); returns once AMI is logged in."""
        name = name or f"lab-{uuid.uuid4().hex[:8]}"
        app = AgiServer(port=0)
        await app.start()
        sim = AgiServer(port=0)
        await sim.start()
        started: list[AsteriskInstance] = []
        try:
            network_asterisk = None
            if over_pjsip:
                network_asterisk = AsteriskInstance(
                    runtime,
                    InstanceOptions(name=f"{name}-net", agi_port=app.port, sim_agi_port=sim.port,
                                    carrier_match="127.0.0.1"),
                    base_dir,
                )
                await asyncio.to_thread(network_asterisk.start)
                started.append(network_asterisk)
                options = InstanceOptions(name=name, agi_port=app.port, caller_id_number=caller_id_number,
                                          trunk=("127.0.0.1", network_asterisk.options.sip_port))
            else:
                options = InstanceOptions(name=name, agi_port=app.port, sim_agi_port=sim.port,
                                          caller_id_number=caller_id_number)
            asterisk = AsteriskInstance(runtime, options, base_dir)
            await asyncio.to_thread(asterisk.start)
            started.append(asterisk)
            phones_host = network_asterisk or asterisk
            owner = runtime.asterisk_user() if runtime.root is not None else None
            network = PhoneNetwork(phones_host.spool_dir / "sim", runtime.inner_path, ring_s=ring_s, owner=owner)
            await network.prepare()
            sim.add_route("phone", network.handle)
            ami = AmiGateway(asterisk.ami)
            await ami.connect()
        except BaseException:
            for instance in started:
                await asyncio.to_thread(instance.destroy)
            await app.stop()
            await sim.stop()
            raise
        return cls(asterisk, network_asterisk, app, network, ami,
                   TRUNK_TEMPLATE if over_pjsip else LOCAL_TEMPLATE, sim)

    async def stop(self, keep_files: bool = False) -> None:
        """Stop everything the lab started (and delete the instances' files unless kept)."""
        await self.ami.close()
        for instance in (self.asterisk, self.network_asterisk):
            if instance is not None:
                await asyncio.to_thread(instance.stop if keep_files else instance.destroy)
        await self.app.stop()
        await self._sim_server.stop()

    def dial_string(self, number: str) -> str:
        """The Originate channel for a phone number, from the dial template."""
        return self.dial_template.replace("${NUMBER}", number)

    async def call(
        self,
        number: str,
        *,
        context: str = "binfoon-member",
        attempt_id: str | None = None,
        ring_timeout_s: float = 10.0,
        variables: dict[str, str] | None = None,
    ) -> OriginateResult:
        """Dial ``number``; the answered call runs ``context`` (by default the member-call AGI)."""
        attempt_id = attempt_id or str(uuid.uuid4())
        return await self.ami.originate(
            attempt_id,
            self.dial_string(number),
            context=context,
            variables={"BINFOON_ATTEMPT": attempt_id, **(variables or {})},
            timeout_s=ring_timeout_s,
        )

    def publish_audio(self, source: Path, name: str) -> str:
        """Copy an 8 kHz WAV where the app-side Asterisk can play it; returns its sound name."""
        sounds = self.asterisk.spool_dir / "sounds"
        sounds.mkdir(exist_ok=True)
        target = sounds / f"{name}.wav"
        target.write_bytes(source.read_bytes())
        target.chmod(0o644)
        return self.asterisk.runtime.inner_path(target.with_suffix(""))
