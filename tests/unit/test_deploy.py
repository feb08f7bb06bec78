"""`binfoon deploy`: the accounts' numbering, who owns what, and the systemd units (checked by
systemd's own `systemd-analyze verify`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ivr.asterisk.install import free_system_id, remap_account
from ivr.commands.deploy import (
    ASTERISK_UNIT,
    OFFICERS_PATH_UNIT,
    OFFICERS_RELOAD_UNIT,
    SERVICE_UNIT,
    Layout,
    ownership_plan,
    parse_unit,
    render_config,
    render_units,
)
from ivr.config import load_settings

PASSWD = "root:x:0:0:root:/root:/bin/bash\nasterisk:x:101:101:Asterisk PBX daemon:/var/lib/asterisk:/usr/sbin/nologin\n"
GROUP = "root:x:0:\naudio:x:29:asterisk\nasterisk:x:101:\n"


def test_the_root_asterisk_account_is_renumbered_and_nothing_else() -> None:
    passwd, group = remap_account(PASSWD, GROUP, "asterisk", 995, 994)
    assert passwd.splitlines() == ["root:x:0:0:root:/root:/bin/bash",
                                   "asterisk:x:995:994:Asterisk PBX daemon:/var/lib/asterisk:/usr/sbin/nologin"]
    assert group.splitlines() == ["root:x:0:", "audio:x:29:asterisk", "asterisk:x:994:"]


def test_a_system_id_is_free_on_the_host_and_in_the_root() -> None:
    assert free_system_id(set()) == 999
    assert free_system_id({999, 998, 997}) == 996
    with pytest.raises(RuntimeError, match="no free system uid"):
        free_system_id(set(range(100, 1000)))


def test_the_service_owns_its_data_and_shares_the_spool_through_asterisks_group(tmp_path: Path) -> None:
    data, run = tmp_path / "var", tmp_path / "root" / "srv" / "binfoon" / "default"
    plan = {path: (uid, gid, mode, recursive)
            for path, uid, gid, mode, recursive in ownership_plan(data, run, data / "binfoon.db", (990, 990), 995)}
    assert plan[data] == (990, 990, 0o700, True)
    assert plan[data / "binfoon.db"] == (990, 990, 0o600, False)
    assert plan[run / "ami.secret"] == (990, 990, 0o600, False)          # the service's alone
    assert plan[run / "spool"] == (-1, 995, 0o2770, False)               # Asterisk's, shared by group
    assert plan[run / "spool" / "binfoon-recordings"][:2] == (990, 995)
    # The officers' SIP accounts: the service writes them, Asterisk's group reads them, nobody else.
    assert plan[run / "etc" / "officers"] == (990, 995, 0o2750, True)


def test_root_reloads_asterisk_when_the_service_rewrites_the_officers_accounts(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    units = render_units(layout)
    path_unit = units[OFFICERS_PATH_UNIT]
    assert f"PathChanged={layout.instance_dir}/etc/officers/pjsip-officers.conf" in path_unit
    # A ban the unprivileged service writes takes effect through the same reload.
    assert f"PathChanged={layout.instance_dir}/etc/officers/pjsip-bans.conf" in path_unit
    assert f"Unit={OFFICERS_RELOAD_UNIT}" in path_unit
    reload = parse_unit(units[OFFICERS_RELOAD_UNIT])
    assert reload["User"] == ["root"] and reload["Type"] == ["oneshot"]
    assert reload["ExecStart"] == [f"{layout.binfoon} asterisk reload-pjsip --name {layout.instance}"]
    # Only the control socket's directory is writable; no network at all.
    assert reload["ReadWritePaths"] == [f"{layout.instance_dir}/run"] and reload["PrivateNetwork"] == ["yes"]


def test_a_system_asterisk_inside_the_data_dir_can_still_pass_through_it(tmp_path: Path) -> None:
    data = tmp_path / "var"
    plan = {p: rest for p, *rest in ownership_plan(data, data / "asterisk" / "default", None, (990, 990), 995)}
    assert plan[data] == [990, 995, 0o710, False]
    # Not recursive there: the keys a root command may have made first are still handed to the service.
    for key in ("pin-pepper.key", "audit.key", "recordings.key", "web-session.key"):
        assert plan[data / key] == [990, 990, 0o600, False]


def _layout(tmp_path: Path) -> Layout:
    # systemd-analyze checks that ExecStart's program exists: the prefix's venv is this one.
    prefix = tmp_path / "opt"
    prefix.mkdir()
    (prefix / "venv").symlink_to(Path(sys.prefix))
    return Layout(prefix=prefix)


def _verify(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *(f"./{name}" for name in names)], cwd=directory,
                          capture_output=True, text=True, timeout=60, check=False)


def test_systemd_analyze_verifies_the_units_without_a_word(tmp_path: Path) -> None:
    units = render_units(_layout(tmp_path))
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    out = _verify(tmp_path, *units)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_systemd_analyze_would_catch_a_misspelt_hardening_key(tmp_path: Path) -> None:
    text = render_units(_layout(tmp_path))[SERVICE_UNIT].replace("ProtectClock=", "ProtectClok=")
    (tmp_path / SERVICE_UNIT).write_text(text)
    out = _verify(tmp_path, SERVICE_UNIT)
    assert "Unknown key 'ProtectClok'" in out.stdout + out.stderr


def test_the_service_unit_has_no_privilege_and_writes_only_its_own_places() -> None:
    layout = Layout()
    service = parse_unit(render_units(layout)[SERVICE_UNIT])
    assert service["User"] == ["binfoon"] and service["SupplementaryGroups"] == ["binfoon-asterisk"]
    assert service["CapabilityBoundingSet"] == [""] and service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"] and service["PrivateTmp"] == ["yes"]
    assert service["ProtectHome"] == ["yes"] and service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert service["ReadWritePaths"] == [
        ("/var/lib/binfoon /var/cache/binfoon/asterisk-root-testing/srv/binfoon/default/spool "
         "/var/cache/binfoon/asterisk-root-testing/srv/binfoon/default/etc/officers "
         "/opt/binfoon/app/prompts/rendered")]
    assert service["ExecStart"] == ["/opt/binfoon/venv/bin/binfoon serve --name default --external-asterisk"]
    asterisk = parse_unit(render_units(layout)[ASTERISK_UNIT])
    assert asterisk["User"] == ["root"]
    assert asterisk["ExecStart"] == ["/opt/binfoon/venv/bin/binfoon asterisk run --name default"]


def test_the_written_settings_load(tmp_path: Path) -> None:
    config = tmp_path / "binfoon.toml"
    config.write_text(render_config(Layout()))
    settings = load_settings(config_file=config, environ={})
    assert settings.data_dir == Path("/var/lib/binfoon") and settings.cache_dir == Path("/var/cache/binfoon")
    assert settings.database_url == "postgresql+psycopg:///binfoon?host=/var/run/postgresql" and settings.service_user == "binfoon"


def test_mapping_the_root_renumbers_asterisk_and_its_stopped_instances_files(tmp_path: Path) -> None:
    """Issue 14 item 0, on a miniature root: the root's files and a stopped instance's follow the new
    ids; a running instance's files are left to it (it renders again when it next starts)."""
    import os

    from ivr.asterisk.install import AsteriskRuntime, map_asterisk_account

    if os.geteuid() != 0:
        pytest.fail("the tests run as root (`make test`): re-owning files needs it")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    owned = {name: root / name for name in ("var/lib/asterisk/astdb.sqlite3", "srv/binfoon/stopped/lib/astdb",
                                             "srv/binfoon/running/lib/astdb")}
    for path in owned.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.chown(path, 101, 101)
    for name in ("stopped", "running"):
        (root / "srv" / "binfoon" / name / "instance.json").write_text("{}")
    (root / "srv/binfoon/running/run").mkdir()
    (root / "srv/binfoon/running/run/asterisk.pid").write_text(f"{os.getpid()}\n")   # a live process
    runtime = AsteriskRuntime(root=root, version="22", module_dir="/usr/lib/asterisk/modules")

    account = map_asterisk_account(runtime, load_settings(config_file=None, environ={}).asterisk_host_user)
    assert runtime.asterisk_user() == (account.uid, account.gid) != (101, 101)
    assert os.stat(owned["var/lib/asterisk/astdb.sqlite3"]).st_uid == account.uid
    assert os.stat(owned["srv/binfoon/stopped/lib/astdb"]).st_uid == account.uid
    assert os.stat(owned["srv/binfoon/running/lib/astdb"]).st_uid == 101
    assert map_asterisk_account(runtime, account.name) == account   # idempotent
