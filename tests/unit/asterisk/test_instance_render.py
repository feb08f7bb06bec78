"""The rendered configuration of an instance: loopback AMI, generated secret, private files."""

import re
import stat
from pathlib import Path

from ivr.asterisk.install import AsteriskRuntime
from ivr.asterisk.instance import CONF_TEMPLATES, AsteriskInstance, InstanceOptions


def _fake_root(tmp_path: Path) -> AsteriskRuntime:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nasterisk:x:101:101::/var/lib/asterisk:/x\n")
    return AsteriskRuntime(root=root, version="22.10.1", module_dir="/usr/lib/x86_64-linux-gnu/asterisk/modules")


def _render(tmp_path: Path, **options: object) -> AsteriskInstance:
    runtime = _fake_root(tmp_path)
    instance = AsteriskInstance(runtime, InstanceOptions(name="unit", agi_port=4999, **options),
                                runtime.root / "srv" / "binfoon")  # type: ignore[operator]
    instance.render()
    return instance


def test_every_template_is_fully_rendered(tmp_path: Path) -> None:
    instance = _render(tmp_path, sim_agi_port=5000, trunk=("127.0.0.1", 5070), carrier_match="127.0.0.1")
    etc = instance.run_dir / "etc"
    rendered = {p.name for p in etc.glob("*.conf")}
    expected = {p.name.removesuffix(".tmpl") for p in CONF_TEMPLATES.iterdir() if p.suffix in (".conf", ".tmpl")}
    assert rendered == expected
    for path in etc.glob("*.conf"):
        assert not re.search(r"\$\{[a-z_]+\}", path.read_text()), f"unfilled placeholder in {path.name}"
    assert (etc / "dialplan" / "binfoon-simulator.conf").exists()
    # Directories point inside the run directory, as Asterisk sees it.
    assert "astspooldir => /srv/binfoon/unit/spool" in (etc / "asterisk.conf").read_text()


def test_ami_is_loopback_only_with_a_generated_secret(tmp_path: Path) -> None:
    instance = _render(tmp_path)
    manager = (instance.run_dir / "etc" / "manager.conf").read_text()
    assert "bindaddr = 127.0.0.1" in manager
    secret = instance.ami.secret
    assert len(secret) >= 43 and f"secret = {secret}" in manager
    assert secret not in "".join(p.read_text() for p in CONF_TEMPLATES.iterdir())
    assert stat.S_IMODE((instance.run_dir / "ami.secret").stat().st_mode) == 0o600
    assert stat.S_IMODE((instance.run_dir / "etc" / "manager.conf").stat().st_mode) == 0o640
    write = re.search(r"^write = (.*)$", manager, re.M)
    assert write is not None and not {"command", "system", "config", "all"} & set(write.group(1).split(","))


def test_second_instance_gets_other_ports_and_secret(tmp_path: Path) -> None:
    runtime = _fake_root(tmp_path)
    base = runtime.root / "srv" / "binfoon"  # type: ignore[operator]
    a = AsteriskInstance(runtime, InstanceOptions(name="a"), base)
    b = AsteriskInstance(runtime, InstanceOptions(name="b"), base)
    a.render()
    b.render()
    assert a.options.ami_port != b.options.ami_port and a.options.sip_port != b.options.sip_port
    assert a.ami.secret != b.ami.secret
    # Ports and secret survive a restart of the same instance.
    again = AsteriskInstance(runtime, InstanceOptions(name="a"), base)
    assert again.ami == a.ami


def test_simulator_dialplan_only_where_asked(tmp_path: Path) -> None:
    instance = _render(tmp_path)
    assert not (instance.run_dir / "etc" / "dialplan" / "binfoon-simulator.conf").exists()
    assert not (instance.run_dir / "etc" / "pjsip-trunk.conf").exists()


def test_police_line_and_inbound_dialplan_are_rendered(tmp_path: Path) -> None:
    instance = _render(tmp_path, police_line="+3250000199")
    etc = instance.run_dir / "etc"
    extensions = (etc / "extensions.conf").read_text()
    assert re.search(r"^POLICE_LINE = \+3250000199$", extensions, re.M)
    assert "#include dialplan/binfoon-inbound.conf" in extensions
    inbound = (etc / "dialplan" / "binfoon-inbound.conf").read_text()
    assert "[binfoon-trunk-in]" in inbound and "[binfoon-police]" in inbound
    assert "${POLICE_LINE}" in inbound and "AGI(${BINFOON_AGI}/police_intake)" in inbound
    # The trunk-in context lives in one file only (a second copy would clash on reload).
    assert "[binfoon-trunk-in]" not in (etc / "dialplan" / "binfoon-member.conf").read_text()
    # The default police line is the setting's default.
    assert re.search(r"^POLICE_LINE = \+3250000100$",
                     (_render(tmp_path / "b").run_dir / "etc" / "extensions.conf").read_text(), re.M)


def test_admin_line_is_rendered_and_routed_to_its_flow(tmp_path: Path) -> None:
    from ivr.config import Settings

    instance = _render(tmp_path, admin_line="+3250000399")
    etc = instance.run_dir / "etc"
    assert re.search(r"^ADMIN_LINE = \+3250000399$", (etc / "extensions.conf").read_text(), re.M)
    inbound = (etc / "dialplan" / "binfoon-inbound.conf").read_text()
    assert '"${CALLED}" = "${ADMIN_LINE}"]?binfoon-admin,s,1' in inbound
    assert "[binfoon-admin]" in inbound and "AGI(${BINFOON_AGI}/admin_replay)" in inbound
    # The instance's default is the setting's default.
    assert InstanceOptions(name="x").admin_line == Settings().admin_line_number


def _sections(text: str) -> list[dict[str, str]]:
    """pjsip.conf sections as dicts, ``name`` holding the section name."""
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if line.startswith("["):
            out.append({"name": line.strip("[]")})
        elif "=" in line and out:
            key, _, value = line.partition("=")
            out[-1][key.strip()] = value.strip()
    return out


def test_the_trunk_accepts_calls_from_the_carrier_address(tmp_path: Path) -> None:
    instance = _render(tmp_path, trunk=("192.0.2.10", 5060))
    sections = _sections((instance.run_dir / "etc" / "pjsip-trunk.conf").read_text())
    [identify] = [s for s in sections if s.get("type") == "identify"]
    assert identify == {"name": "trunk", "type": "identify", "endpoint": "trunk", "match": "192.0.2.10"}
    [endpoint] = [s for s in sections if s.get("type") == "endpoint"]
    assert endpoint["context"] == "binfoon-trunk-in"


def test_the_simulated_network_delivers_callers_to_binfoon(tmp_path: Path) -> None:
    instance = _render(tmp_path, sim_agi_port=5000, carrier_match="127.0.0.1",
                       carrier_contact=("127.0.0.1", 5099))
    sections = _sections((instance.run_dir / "etc" / "pjsip-network.conf").read_text())
    [endpoint] = [s for s in sections if s.get("type") == "endpoint"]
    [aor] = [s for s in sections if s.get("type") == "aor"]
    assert endpoint["aors"] == aor["name"] == "carrier-in"
    assert aor["contact"] == "sip:127.0.0.1:5099"
    simulator = (instance.run_dir / "etc" / "dialplan" / "binfoon-simulator.conf").read_text()
    assert "[sim-caller]" in simulator and "AGI(${SIM_AGI}/caller,${SIM_CALL})" in simulator
    # Without a contact the network places no calls, and the AOR has none.
    bare = _render(tmp_path / "b", carrier_match="127.0.0.1")
    bare_sections = _sections((bare.run_dir / "etc" / "pjsip-network.conf").read_text())
    [aor] = [s for s in bare_sections if s.get("type") == "aor"]
    assert "contact" not in aor


def test_an_instance_takes_the_rtp_ports_it_is_sized_for(tmp_path: Path) -> None:
    """The lab's network carries every call of a farm: 200 ports (100 calls) ran out at 90 channels
    and it answered 488; it asks for more (``rtp_ports``), a node keeps the default."""
    def block(instance: AsteriskInstance) -> int:
        rtp = (instance.run_dir / "etc" / "rtp.conf").read_text()
        start = int(re.search(r"rtpstart = (\d+)", rtp).group(1))  # type: ignore[union-attr]
        end = int(re.search(r"rtpend = (\d+)", rtp).group(1))  # type: ignore[union-attr]
        return end - start + 1
    wide = _render(tmp_path / "wide", rtp_ports=460)
    wide.allocate_ports()
    wide.render()
    assert block(wide) == 460
    plain = _render(tmp_path / "plain")
    plain.allocate_ports()
    plain.render()
    assert block(plain) == 200
