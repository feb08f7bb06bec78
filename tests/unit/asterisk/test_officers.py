"""Officers' SIP accounts as PJSIP configuration: pure rendering, the digest, names, the file on disk."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from ivr.asterisk.officers import (
    OFFICER_CONTEXT,
    REALM,
    OfficerEndpoint,
    digest_ha1,
    endpoint_of_channel,
    officers_path,
    render_officers,
    username_problem,
    write_officers,
)


def _sections(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """The file as (section, {option: [values]}) in order, as Asterisk's config parser reads it."""
    out: list[tuple[str, dict[str, list[str]]]] = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            out.append((line.strip("[]"), {}))
            continue
        key, _, value = line.partition("=")
        out[-1][1].setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_digest_is_asterisk_s_own_example() -> None:
    # pjsip.conf.sample: echo -n "fred:asterisk:mypass" | openssl dgst -md5
    assert digest_ha1("fred", "mypass", "asterisk") == "43a8d9be3da524f9a59ca0593d7b1b5d"
    assert digest_ha1("officer-7", "pw") == hashlib.md5(f"officer-7:{REALM}:pw".encode()).hexdigest()


def test_an_account_is_an_endpoint_found_only_by_its_digest_auth() -> None:
    ha1 = digest_ha1("officer-7", "a long secret password")
    sections = _sections(render_officers([OfficerEndpoint("officer-7", ha1)]))
    by_type = {options["type"][0]: (name, options) for name, options in sections}
    assert sorted(by_type) == ["aor", "auth", "endpoint"]
    assert {name for name, _ in sections} == {"officer-7"}
    _, endpoint = by_type["endpoint"]
    assert endpoint["identify_by"] == ["auth_username"]
    assert endpoint["context"] == [OFFICER_CONTEXT]
    assert endpoint["auth"] == ["officer-7"] and endpoint["aors"] == ["officer-7"]
    assert endpoint["trust_id_inbound"] == ["no"]
    _, auth = by_type["auth"]
    assert auth["username"] == ["officer-7"] and auth["realm"] == [REALM]
    assert auth["password_digest"] == [f"MD5:{ha1}"]
    assert "password" not in auth  # the password itself is never written
    _, aor = by_type["aor"]
    assert aor["max_contacts"] == ["1"]


def test_no_accounts_define_nothing_and_order_is_stable() -> None:
    assert _sections(render_officers([])) == []
    a, b = OfficerEndpoint("b-officer", "0" * 32), OfficerEndpoint("a-officer", "1" * 32)
    assert render_officers([a, b]) == render_officers([b, a])
    assert [name for name, _ in _sections(render_officers([a, b]))][::3] == ["a-officer", "b-officer"]


@pytest.mark.parametrize("name", ["trunk", "trunk-auth", "carrier-in", "global", "transport-udp", "Officer", "ab",
                                  "officer 7", "officer]7", "-officer", "a" * 29, "officer\n[trunk]"])
def test_names_the_configuration_uses_or_cannot_hold_are_refused(name: str) -> None:
    assert username_problem(name) is not None
    with pytest.raises(ValueError):
        render_officers([OfficerEndpoint(name, "0" * 32)])


def test_a_bad_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="32 hex"):
        render_officers([OfficerEndpoint("officer-7", "secret\n[trunk]")])


@pytest.mark.parametrize(("channel", "endpoint"), [
    ("PJSIP/officer-7-0000000a", "officer-7"),
    ("PJSIP/inspecteur.peeters-00000001", "inspecteur.peeters"),
    ("PJSIP/trunk-0000001f", "trunk"),
    ("Local/+3250000100@binfoon-trunk-in-00000001;2", None),
    ("PJSIP/officer-7", None),
    ("", None),
])
def test_the_endpoint_comes_from_the_channel_name_asterisk_gives(channel: str, endpoint: str | None) -> None:
    assert endpoint_of_channel(channel) == endpoint


def test_the_file_is_replaced_whole_and_private(tmp_path: Path) -> None:
    write_officers(tmp_path, "old\n")
    path = write_officers(tmp_path, "new\n")
    assert path == officers_path(tmp_path) == tmp_path / "etc" / "officers" / "pjsip-officers.conf"
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["pjsip-officers.conf"]  # no temporary left
