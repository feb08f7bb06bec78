"""The carrier trunk's settings: validation (naming the setting), what pjsip.conf gets, the status report."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

import pytest

from ivr.asterisk.instance import AsteriskInstance, InstanceOptions
from ivr.asterisk.trunk import (
    SipEdge,
    Trunk,
    TrunkError,
    check_ports,
    from_settings,
    last_registration_response,
    registration_report,
    secret_mode_problem,
    split_list,
    trunk_sections,
)
from ivr.config import Settings
from tests.unit.asterisk.test_instance_render import _fake_root, _sections


def _settings(**values: object) -> Settings:
    return dataclasses.replace(Settings(), **values)


# -- validation -----------------------------------------------------------------------------------
def test_the_defaults_are_the_lab_no_trunk_loopback_random_ports_alaw_first() -> None:
    trunk, edge = from_settings(Settings())
    assert trunk is None
    assert edge == SipEdge(bind_address="127.0.0.1", codecs=("alaw", "ulaw"))
    assert (Settings().sip_port, Settings().rtp_port_start, Settings().rtp_port_end) == (0, 0, 0)


def test_a_production_trunk_from_the_settings() -> None:
    trunk, edge = from_settings(_settings(
        trunk_host="sip.carrier.example", trunk_username="zone5415", trunk_secret_file="/etc/binfoon/trunk.secret",
        trunk_match="192.0.2.0/28, 198.51.100.7", sip_bind_address="0.0.0.0", sip_port=5060,
        rtp_port_start=20000, rtp_port_end=20199, sip_external_signaling_address="203.0.113.5",
        sip_external_media_address="203.0.113.5", sip_local_net="10.0.0.0/8,172.16.0.0/12", sip_codecs="alaw"))
    assert trunk == Trunk(host="sip.carrier.example", username="zone5415", secret_file="/etc/binfoon/trunk.secret",
                          match=("192.0.2.0/28", "198.51.100.7"))
    assert trunk.identify_match == ("192.0.2.0/28", "198.51.100.7") and trunk.authenticates
    assert edge.local_net == ("10.0.0.0/8", "172.16.0.0/12") and edge.codecs == ("alaw",)


@pytest.mark.parametrize(("values", "message"), [
    ({"trunk_host": "sip.example", "trunk_transport": "sctp"}, "trunk_transport: 'sctp' is not one of udp, tcp, tls"),
    ({"trunk_host": "sip.example", "trunk_transport": "tls"}, "trunk_tls_cert_file: required with trunk_transport = tls"),
    ({"trunk_host": "sip.example", "trunk_transport": "tls", "trunk_tls_cert_file": "c.pem",
      "trunk_tls_key_file": "k.pem"}, "trunk_tls_ca_file: required"),
    ({"trunk_host": "sip.example", "trunk_username": "zone"}, "trunk_secret_file: required with trunk_username"),
    ({"trunk_host": "sip.example", "trunk_secret_file": "/s"}, "trunk_username: required with trunk_secret_file"),
    ({"trunk_username": "zone", "trunk_secret_file": "/s"}, "trunk_host: required with trunk_username"),
    ({"trunk_host": "sip.example", "trunk_match": "192.0.2.0/33"}, "trunk_match: '192.0.2.0/33' is not an IP"),
    ({"trunk_host": "sip.example", "trunk_match": "10.1.2.300"}, "trunk_match: '10.1.2.300' is not an IP"),
    ({"trunk_host": "sip.example", "trunk_port": 70000}, "trunk_port: 70000 is not a port"),
    ({"trunk_host": "sip example\n[evil]"}, "trunk_host: "),
    ({"trunk_host": "sip.example", "trunk_from_user": "a;b"}, "trunk_from_user: 'a;b' has characters"),
    ({"trunk_host": "sip.example", "trunk_username": "x\ny", "trunk_secret_file": "/s"}, "trunk_username: "),
    ({"rtp_port_start": 20000, "rtp_port_end": 19999}, "rtp_port_end: 19999 is below rtp_port_start 20000"),
    ({"rtp_port_start": 20000, "rtp_port_end": 20009}, "rtp_port_end: 20000-20009 has 10 ports; at least 20"),
    ({"rtp_port_end": 20199}, "rtp_port_end is set without rtp_port_start"),
    ({"rtp_port_start": 80}, "rtp_port_start: 80 must be 1024-65535"),
    ({"sip_port": 99999}, "sip_port: 99999 is not a port"),
    ({"sip_bind_address": "eth0"}, "sip_bind_address: 'eth0' is not an IP address"),
    ({"sip_local_net": "10.0.0.0/8,nonsense"}, "sip_local_net: 'nonsense' is not an IP address or CIDR"),
    ({"sip_external_media_address": "203.0.113.5"}, "sip_local_net: required with an external address"),
    ({"sip_codecs": "alaw,opus"}, "sip_codecs: 'opus' is not one of alaw, ulaw"),
    ({"sip_codecs": " , "}, "sip_codecs: at least one codec"),
])
def test_invalid_settings_are_refused_naming_the_setting(values: dict[str, object], message: str) -> None:
    with pytest.raises(TrunkError) as caught:
        from_settings(_settings(**values))
    assert message in str(caught.value)


def test_a_default_rtp_block_of_200_ports_is_accepted() -> None:
    check_ports(5060, 20000, 0)
    check_ports(0, 0, 0)


def test_a_secret_file_must_be_private() -> None:
    assert secret_mode_problem("trunk_secret_file", stat.S_IFREG | 0o600) is None
    assert secret_mode_problem("trunk_secret_file", stat.S_IFREG | 0o400) is None
    for mode in (0o640, 0o604, 0o660, 0o644):
        problem = secret_mode_problem("trunk_secret_file", stat.S_IFREG | mode)
        assert problem is not None and problem.startswith("trunk_secret_file: ") and f"{mode:04o}" in problem


def test_split_list() -> None:
    assert split_list(" a, b,,c ,") == ("a", "b", "c")
    assert split_list("") == ()


# -- what pjsip.conf gets -------------------------------------------------------------------------
def test_registration_and_invite_auth_are_rendered_with_the_secret() -> None:
    trunk = Trunk(host="sip.example", port=5070, username="zone5415", secret_file="/s", from_domain="example.be")
    values = trunk_sections(trunk, secret="s3cr3t", caller_id_number="+3250000000", codecs=("alaw", "ulaw"))
    assert values["trunk_codecs"] == "alaw,ulaw" and values["trunk_transport"] == "transport-udp"
    assert "outbound_auth = trunk-auth" in values["trunk_endpoint_extra"]
    # From carries each call's caller ID (number and the name "BIN"): no fixed from_user unless asked for.
    assert "from_user" not in values["trunk_endpoint_extra"]
    fixed = trunk_sections(Trunk(host="sip.example", from_user="zone5415"), secret="", caller_id_number="+3250000000",
                           codecs=("alaw",))
    assert "from_user = zone5415" in fixed["trunk_endpoint_extra"]
    assert "from_domain = example.be" in values["trunk_endpoint_extra"]
    sections = values["trunk_sections"]
    assert "username = zone5415\npassword = s3cr3t" in sections
    assert "server_uri = sip:sip.example:5070" in sections
    assert "client_uri = sip:zone5415@example.be:5070" in sections
    assert "auth_rejection_permanent = yes" in sections
    # Without a username: no auth, no registration (a carrier that trusts our address).
    bare = trunk_sections(Trunk(host="192.0.2.10"), secret="", caller_id_number="+3250000000", codecs=("alaw",))
    assert "auth" not in bare["trunk_endpoint_extra"] and bare["trunk_sections"] == ""
    # Registration can be turned off while INVITEs still authenticate.
    quiet = trunk_sections(dataclasses.replace(trunk, register=False), secret="s", caller_id_number="",
                           codecs=("alaw",))
    assert "type = registration" not in quiet["trunk_sections"] and "type = auth" in quiet["trunk_sections"]


def test_tcp_uses_its_own_transport_and_uri() -> None:
    values = trunk_sections(Trunk(host="sip.example", transport="tcp"), secret="", caller_id_number="+32",
                            codecs=("alaw",))
    assert values["trunk_transport"] == "transport-tcp"
    # Escaped: an unescaped ';' starts a comment in pjsip.conf (measured: the transport was dropped).
    assert values["trunk_contact"] == "sip:sip.example:5060\\;transport=tcp"


def _secret(tmp_path: Path, text: str = "s3cr3t-abc", mode: int = 0o600) -> Path:
    path = tmp_path / "trunk.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.chmod(path, mode)
    return path


def _instance(tmp_path: Path, **options: object) -> AsteriskInstance:
    runtime = _fake_root(tmp_path)
    return AsteriskInstance(runtime, InstanceOptions(name="unit", agi_port=4999, **options),  # type: ignore[arg-type]
                            runtime.root / "srv" / "binfoon")  # type: ignore[operator]


def test_the_trunk_is_identified_by_address_only(tmp_path: Path) -> None:
    secret = _secret(tmp_path)
    instance = _instance(tmp_path, trunk=Trunk(host="sip.example", username="zone", secret_file=str(secret),
                                               match=("192.0.2.0/28",)))
    instance.render()
    etc = instance.run_dir / "etc"
    pjsip = (etc / "pjsip.conf").read_text()
    assert re.search(r"^endpoint_identifier_order = ip,auth_username$", pjsip, re.MULTILINE)
    assert "username" not in re.findall(r"^endpoint_identifier_order = (.*)$", pjsip, re.MULTILINE)[0].split(",")
    sections = _sections((etc / "pjsip-trunk.conf").read_text())
    [endpoint] = [s for s in sections if s.get("type") == "endpoint"]
    assert endpoint["identify_by"] == "ip" and endpoint["outbound_auth"] == "trunk-auth"
    [identify] = [s for s in sections if s.get("type") == "identify"]
    assert identify["match"] == "192.0.2.0/28"
    [registration] = [s for s in sections if s.get("type") == "registration"]
    assert registration["server_uri"] == "sip:sip.example:5060"
    # The secret is in the rendered config only, never in instance.json; that file is Asterisk's user's
    # alone (0400): the service, a member of Asterisk's group for the shared spool, cannot read it.
    assert "password = s3cr3t-abc" in (etc / "pjsip-trunk.conf").read_text()
    trunk_conf = (etc / "pjsip-trunk.conf").stat()
    assert (stat.S_IMODE(trunk_conf.st_mode), trunk_conf.st_uid) == (0o400, instance.runtime.asterisk_user()[0])
    assert stat.S_IMODE((etc / "pjsip.conf").stat().st_mode) == 0o640   # no secret: the group reads it
    assert "s3cr3t-abc" not in (instance.run_dir / "instance.json").read_text()


def test_bind_address_ports_nat_and_codecs_are_rendered(tmp_path: Path) -> None:
    edge = SipEdge(bind_address="0.0.0.0", external_signaling_address="203.0.113.5",
                   external_media_address="203.0.113.6", local_net=("10.0.0.0/8", "192.168.0.0/16"), codecs=("alaw",))
    instance = _instance(tmp_path, trunk=Trunk(host="192.0.2.10"), edge=edge, sip_port=5060, rtp_start=20000,
                         rtp_end=20099)
    instance.render()
    etc = instance.run_dir / "etc"
    pjsip = (etc / "pjsip.conf").read_text()
    assert "bind = 0.0.0.0:5060" in pjsip
    assert "external_signaling_address = 203.0.113.5" in pjsip and "external_media_address = 203.0.113.6" in pjsip
    assert "local_net = 10.0.0.0/8\nlocal_net = 192.168.0.0/16" in pjsip
    rtp = (etc / "rtp.conf").read_text()
    assert "rtpstart = 20000" in rtp and "rtpend = 20099" in rtp
    assert "allow = alaw\n" in (etc / "pjsip-trunk.conf").read_text()
    # Ports given by the settings are kept as given.
    assert (instance.options.sip_port, instance.options.rtp_start) == (5060, 20000)


def test_tls_files_are_copied_where_asterisk_can_read_them(tmp_path: Path) -> None:
    files = {}
    for kind in ("cert", "key", "ca"):
        files[kind] = tmp_path / f"{kind}.pem"
        files[kind].write_text(f"-----BEGIN {kind}-----\n")
    trunk = Trunk(host="sip.example", port=5061, transport="tls", tls_cert_file=str(files["cert"]),
                  tls_key_file=str(files["key"]), tls_ca_file=str(files["ca"]))
    instance = _instance(tmp_path, trunk=trunk, sip_port=5060)
    instance.render()
    etc = instance.run_dir / "etc"
    sections = _sections((etc / "pjsip.conf").read_text())
    [tls] = [s for s in sections if s.get("protocol") == "tls"]
    assert tls["bind"] == "127.0.0.1:5061" and tls["verify_server"] == "yes"
    assert tls["cert_file"] == "/srv/binfoon/unit/etc/keys/trunk-cert.pem"  # as Asterisk sees it (chroot)
    assert (etc / "keys" / "trunk-key.pem").read_text() == "-----BEGIN key-----\n"
    key = (etc / "keys" / "trunk-key.pem").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_uid) == (0o400, instance.runtime.asterisk_user()[0])  # private key
    assert stat.S_IMODE((etc / "keys" / "trunk-cert.pem").stat().st_mode) == 0o640
    # UDP stays for the officers' phones and the lab.
    assert [s["name"] for s in sections if s.get("type") == "transport"] == ["transport-udp", "transport-tls"]
    [endpoint] = [s for s in _sections((etc / "pjsip-trunk.conf").read_text()) if s.get("type") == "endpoint"]
    assert endpoint["transport"] == "transport-tls"


@pytest.mark.parametrize(("mode", "text", "message"), [
    (0o644, "s3cret", "trunk_secret_file: the file is readable or writable by others (mode 0644)"),
    (0o600, "", "trunk_secret_file: the file is empty"),
    (0o600, "a;b", "trunk_secret_file: the secret has characters"),
])
def test_a_bad_secret_file_is_refused_before_anything_is_written(tmp_path: Path, mode: int, text: str,
                                                                 message: str) -> None:
    secret = _secret(tmp_path, text, mode)
    instance = _instance(tmp_path, trunk=Trunk(host="sip.example", username="zone", secret_file=str(secret)))
    with pytest.raises(TrunkError) as caught:
        instance.render()
    assert message in str(caught.value)
    assert not (instance.run_dir / "etc").exists()


def test_a_missing_secret_file_is_refused(tmp_path: Path) -> None:
    instance = _instance(tmp_path, trunk=Trunk(host="sip.example", username="zone",
                                               secret_file=str(tmp_path / "nope")))
    with pytest.raises(TrunkError, match=r"^trunk_secret_file: .*nope does not exist"):
        instance.render()


def test_the_lab_carrier_challenges_and_has_no_static_contact(tmp_path: Path) -> None:
    secret = _secret(tmp_path)
    instance = _instance(tmp_path, sim_agi_port=5000, carrier_match="127.0.0.1", carrier_username="binfoon-lab",
                         carrier_secret_file=str(secret))
    instance.render()
    sections = _sections((instance.run_dir / "etc" / "pjsip-network.conf").read_text())
    [endpoint] = [s for s in sections if s.get("type") == "endpoint"]
    [aor] = [s for s in sections if s.get("type") == "aor"]
    [auth] = [s for s in sections if s.get("type") == "auth"]
    assert endpoint["auth"] == auth["name"] and auth["username"] == "binfoon-lab" and auth["password"] == "s3cr3t-abc"
    assert endpoint["aors"] == aor["name"] == "binfoon-lab"  # a REGISTER's AOR is its digest username
    assert "contact" not in aor and aor["max_contacts"] == "1"
    assert endpoint["identify_by"] == "ip,auth_username"


# -- the status report ----------------------------------------------------------------------------
_REFUSED = ("[2026-12-06 09:18:35.002] WARNING[123] res_pjsip_outbound_registration.c: Fatal response '401' "
            "received from 'sip:127.0.0.1:5070' on registration attempt to 'sip:zone@127.0.0.1:5070', "
            "stopping outbound registration")
_FORBIDDEN = ("WARNING[1] res_pjsip_outbound_registration.c: 403 Forbidden fatal response received from "
              "'sip:x:5060' on registration attempt to 'sip:zone@x:5060', retrying in '300' seconds")
_TEMPORAL = ("WARNING[1] res_pjsip_outbound_registration.c: Temporal response '503' received from 'sip:x:5060' "
             "on registration attempt to 'sip:zone@x:5060', retrying in '30'")


def test_a_refusal_is_reported_with_its_code() -> None:
    report = registration_report({"ObjectName": "trunk", "Status": "Rejected", "ServerUri": "sip:127.0.0.1:5070"},
                                 ["noise", _REFUSED])
    assert report.as_json() == {
        "state": "refused", "last_response": 401, "server_uri": "sip:127.0.0.1:5070",
        "message": "registration refused (401 Unauthorized): check trunk_username and trunk_secret_file"}
    forbidden = registration_report({"Status": "Rejected"}, [_REFUSED, _FORBIDDEN])
    assert forbidden.last_response == 403 and forbidden.message.startswith("registration refused (403 Forbidden)")


def test_registered_wins_over_old_log_lines_and_failures_are_failing() -> None:
    assert registration_report({"Status": "Registered", "ServerUri": "sip:x"}, [_REFUSED]).last_response == 200
    failing = registration_report({"Status": "Rejected"}, [_TEMPORAL])
    assert (failing.state, failing.last_response) == ("failing", 503)
    assert "503 Service Unavailable" in failing.message
    assert registration_report(None, []).state == "not configured"
    assert registration_report({"Status": "Unregistered"}, []).state == "unregistered"
    assert last_registration_response(["nothing here"]) == (None, "")
