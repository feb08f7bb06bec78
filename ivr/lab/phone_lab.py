"""A phone lab: a private Asterisk wired to the app's FastAGI server, an AMI gateway and the
simulated phone network. Used by the tests, the demo and the benchmarks alike.

Two shapes:
- ``over_pjsip=False``: one Asterisk; phones are reached with ``Local/${NUMBER}@sim-phone``, and
  simulated callers reach BINfoon's ``binfoon-trunk-in`` through ``Local/<DID>@sim-carrier``.
- ``over_pjsip=True``: a second Asterisk plays the public network behind a real PJSIP trunk on
  loopback (G.711 RTP media, RFC 4733 DTMF); phones are reached with ``Local/${NUMBER}@binfoon-dial-out`` (the dialplan checks the destination, then dials ``PJSIP/${NUMBER}@trunk``),
  exactly as in production, and simulated callers call in from that Asterisk with
  ``PJSIP/<DID>@carrier-in``, arriving on BINfoon's ``trunk`` endpoint like a carrier's calls.
  That carrier behaves like a real one: BINfoon must REGISTER with a digest secret (generated per
  lab, a 0600 file), every INVITE from BINfoon is challenged, calls in go only to the contact
  BINfoon registered, and requests from any other address are refused.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.instance import AsteriskInstance, InstanceOptions
from ivr.asterisk.trunk import Trunk
from ivr.lab.network import (
    LOCAL_INBOUND_TEMPLATE,
    TRUNK_INBOUND_TEMPLATE,
    CallerScript,
    OutgoingCall,
    PhoneNetwork,
)
from ivr.telephony.agi import AgiServer
from ivr.telephony.ami import AmiGateway
from ivr.telephony.events import OriginateResult

LOCAL_TEMPLATE = "Local/${NUMBER}@sim-phone"
TRUNK_TEMPLATE = "Local/${NUMBER}@binfoon-dial-out"  # the dialplan checks the destination too (A6)
#: BINfoon's account at the lab carrier.
LAB_TRUNK_USERNAME = "binfoon-lab"


def write_secret(path: Path, secret: str) -> None:
    """Write a secret to a new file only its owner can read (0600 from the start, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")


def wait_registered(instance: AsteriskInstance, timeout_s: float) -> None:
    """Block until the instance's trunk registration is accepted (calls in need its contact)."""
    deadline = time.monotonic() + timeout_s
    report = None
    while time.monotonic() < deadline:
        report = instance.registration()
        if report is not None and report.state == "registered":
            return
        time.sleep(0.1)
    raise RuntimeError(f"the trunk did not register within {timeout_s:.0f} s: {report}")


@dataclass
class PhoneLab:
    """Everything needed to place real calls to simulated phones, and to have simulated people call in."""

    asterisk: AsteriskInstance
    network_asterisk: AsteriskInstance | None
    app: AgiServer
    network: PhoneNetwork
    #: BINfoon's AMI (what the application uses).
    ami: AmiGateway
    dial_template: str
    _sim_server: AgiServer
    #: The AMI of the Asterisk hosting the simulated phones and callers (``ami`` itself on one Asterisk).
    network_ami: AmiGateway
    #: The police line's DID, as BINfoon's dialplan knows it (``POLICE_LINE``).
    police_line: str

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
        police_line: str = "+3250000100",
        trunk_secret: str | None = None,
    ) -> "PhoneLab":
        """Start the lab's servers and Asterisk instance(s); returns once AMI is logged in (and, over
        PJSIP, once BINfoon's trunk is registered at the carrier).

        ``trunk_secret``: the secret BINfoon presents to the carrier instead of the right one (a
        wrong secret: the lab then does not wait for the registration, which the carrier refuses).
        """
        name = name or f"lab-{uuid.uuid4().hex[:8]}"
        app = AgiServer(port=0)
        await app.start()
        sim = AgiServer(port=0)
        await sim.start()
        created: list[AsteriskInstance] = []
        gateways: list[AmiGateway] = []
        try:
            network_asterisk = None
            if over_pjsip:
                network_asterisk = AsteriskInstance(
                    runtime,
                    InstanceOptions(name=f"{name}-net", agi_port=app.port, sim_agi_port=sim.port,
                                    carrier_match="127.0.0.1", carrier_username=LAB_TRUNK_USERNAME,
                                    # The carrier of every call (``bench campaign`` runs 100 channels and
                                    # more): 100 calls' ports ran out in a farm of 90 (ivr.lab.farm).
                                    rtp_ports=600),
                    base_dir,
                )
                created.append(network_asterisk)
                net_sip = network_asterisk.allocate_ports().sip_port
                # The carrier's copy of the account's secret, and BINfoon's (the same unless a test says otherwise).
                carrier_secret = network_asterisk.run_dir / "carrier.secret"
                write_secret(carrier_secret, secrets.token_urlsafe(24))
                network_asterisk.options.carrier_secret_file = str(carrier_secret)
                asterisk = AsteriskInstance(runtime, InstanceOptions(name=name), base_dir)
                created.append(asterisk)
                asterisk.run_dir.mkdir(parents=True, exist_ok=True)
                trunk_secret_file = asterisk.run_dir / "trunk.secret"
                write_secret(trunk_secret_file, trunk_secret or carrier_secret.read_text().strip())
                asterisk.options = InstanceOptions(
                    name=name, agi_port=app.port, caller_id_number=caller_id_number, police_line=police_line,
                    trunk=Trunk(host="127.0.0.1", port=net_sip, username=LAB_TRUNK_USERNAME,
                                secret_file=str(trunk_secret_file)),
                )
                await asyncio.to_thread(network_asterisk.start)
            else:
                asterisk = AsteriskInstance(
                    runtime,
                    InstanceOptions(name=name, agi_port=app.port, sim_agi_port=sim.port,
                                    caller_id_number=caller_id_number, police_line=police_line),
                    base_dir,
                )
                created.append(asterisk)
            await asyncio.to_thread(asterisk.start)
            # The app side answers only the dialplan that carries the instance's FastAGI secret.
            app.require_secret(asterisk.agi_secret)
            if network_asterisk is not None and trunk_secret is None:
                await asyncio.to_thread(wait_registered, asterisk, 20.0)
            ami = AmiGateway(asterisk.ami)
            gateways.append(ami)
            await ami.connect()
            network_ami = ami
            if network_asterisk is not None:
                network_ami = AmiGateway(network_asterisk.ami)
                gateways.append(network_ami)
                await network_ami.connect()
            phones_host = network_asterisk or asterisk
            owner = runtime.asterisk_user() if runtime.root is not None else None
            network = PhoneNetwork(
                phones_host.spool_dir / "sim", runtime.inner_path, ring_s=ring_s, owner=owner,
                caller_ami=network_ami,
                inbound_template=TRUNK_INBOUND_TEMPLATE if over_pjsip else LOCAL_INBOUND_TEMPLATE,
            )
            await network.prepare()
            sim.add_route("phone", network.handle)
            sim.add_route("caller", network.handle_caller)
        except BaseException:
            for gateway in gateways:
                await gateway.close()
            for instance in created:
                await asyncio.to_thread(instance.destroy)
            await app.stop()
            await sim.stop()
            raise
        return cls(asterisk=asterisk, network_asterisk=network_asterisk, app=app, network=network, ami=ami,
                   dial_template=TRUNK_TEMPLATE if over_pjsip else LOCAL_TEMPLATE, _sim_server=sim,
                   network_ami=network_ami, police_line=police_line)

    async def stop(self, keep_files: bool = False) -> None:
        """Stop everything the lab started (and delete the instances' files unless kept)."""
        await self.network.close()
        if self.network_ami is not self.ami:
            await self.network_ami.close()
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

    async def call_in(
        self,
        caller_number: str,
        script: CallerScript,
        number: str | None = None,
        *,
        ring_timeout_s: float = 30.0,
    ) -> OutgoingCall:
        """A simulated person with number ``caller_number`` phones BINfoon at ``number`` (by default
        the police line) the way a carrier delivers calls, and plays ``script`` once answered.

        Returns once the call is answered or refused; ``await call.wait()`` for its end.
        """
        return await self.network.place_call(caller_number, script, number or self.police_line,
                                             ring_timeout_s=ring_timeout_s)

    def publish_audio(self, source: Path, name: str) -> str:
        """Copy an 8 kHz WAV where the app-side Asterisk can play it; returns its sound name."""
        sounds = self.asterisk.spool_dir / "sounds"
        sounds.mkdir(exist_ok=True)
        target = sounds / f"{name}.wav"
        target.write_bytes(source.read_bytes())
        target.chmod(0o644)
        return self.asterisk.runtime.inner_path(target.with_suffix(""))
