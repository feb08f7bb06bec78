"""`binfoon deploy systemd` (issue 13 item 6): each rendered unit's ExecStart, run as its User= would
(systemd is not PID 1 here): the Asterisk unit as root, which boots Asterisk as its own account;
the service unit as the service user with the unit's groups, environment and no new privileges,
which comes up ("BINfoon serving") on that Asterisk and stops cleanly.
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.asterisk.install import AsteriskRuntime
from ivr.commands.asterisk import instance_for
from ivr.commands.deploy import (
    ASTERISK_UNIT,
    SERVICE_UNIT,
    Layout,
    ensure_users,
    parse_unit,
    render_config,
    render_units,
)
from ivr.config import load_settings
from tests.integration.conftest import until
from tests.integration.test_privileges import _proc_ids, as_deployed, service_base, start_logged  # noqa: F401

pytestmark = pytest.mark.integration


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_unit_user(unit: dict[str, list[str]]) -> list[str]:
    """setpriv with the unit's User=, Group= and SupplementaryGroups=, and NoNewPrivileges=."""
    user = unit.get("User", ["root"])[0]
    group = unit.get("Group", [user])[0]
    extra = unit.get("SupplementaryGroups", [""])[0].split()
    argv = ["setpriv", f"--reuid={user}", f"--regid={group}"]
    argv += [f"--groups={','.join([group, *extra])}"] if extra else ["--init-groups"]
    if unit.get("NoNewPrivileges") == ["yes"]:
        argv.append("--no-new-privs")
    return [*argv, "--"]


def _environment(unit: dict[str, list[str]]) -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for line in unit.get("Environment", []):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    return env


@pytest.fixture
def layout(service_base: Path, asterisk_runtime: AsteriskRuntime) -> Iterator[Layout]:  # noqa: F811
    """A deployment laid out in a tmp dir: its venv is this one; the embedded root the installed one."""
    assert asterisk_runtime.root is not None, "this machine runs the embedded Asterisk"
    prefix = service_base / "opt"
    prefix.mkdir()
    (prefix / "venv").symlink_to(Path(sys.prefix))
    chosen = Layout(prefix=prefix, config_file=service_base / "etc" / "binfoon.toml", data_dir=service_base / "var",
                    cache_dir=asterisk_runtime.root.parent, instance=f"deploy-{uuid.uuid4().hex[:8]}",
                    asterisk_suite=asterisk_runtime.root.name.removeprefix("asterisk-root-"), database_url="")
    chosen.config_file.parent.mkdir()
    # The test's own FastAGI port and no web console: other tests run side by side.
    chosen.config_file.write_text(render_config(chosen) + f"agi_port = {_free_tcp_port()}\nweb_port = 0\n")
    try:
        yield chosen
    finally:
        settings = load_settings(config_file=chosen.config_file, environ={})
        instance_for(settings, chosen.instance).destroy()


def _stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the unit's whole process group (systemd's KillMode=control-group), then its exit code."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(10)


async def test_each_unit_runs_as_its_user_and_comes_up(layout: Layout, service_base: Path,  # noqa: F811
                                                       asterisk_runtime: AsteriskRuntime) -> None:
    settings = load_settings(config_file=layout.config_file, environ={})
    _asterisk_account, service = ensure_users(settings)  # `binfoon deploy users`
    units = {name: parse_unit(text) for name, text in render_units(layout).items()}
    asterisk_unit, service_unit = units[ASTERISK_UNIT], units[SERVICE_UNIT]
    assert asterisk_unit["User"] == ["root"] and service_unit["User"] == [settings.service_user]

    asterisk_log = service_base / "asterisk-unit.log"
    asterisk = start_logged([*_as_unit_user(asterisk_unit), *shlex.split(asterisk_unit["ExecStart"][0])],
                            _environment(asterisk_unit), asterisk_log, "/")
    serve_log = service_base / "service-unit.log"
    serve: subprocess.Popen[bytes] | None = None
    try:
        instance = instance_for(settings, layout.instance)

        def booted() -> bool:
            if asterisk.poll() is not None:
                raise AssertionError(f"the Asterisk unit exited with {asterisk.returncode}:\n"
                                     f"{asterisk_log.read_text()}\n{instance.log_tail()}")
            return instance.pid is not None and instance.wait_fully_booted(5.0) >= 0
        await until(booted, 60, "Asterisk fully booted")
        assert pwd.getpwuid(_proc_ids(instance.pid)[0]).pw_name == settings.asterisk_host_user  # type: ignore[arg-type]

        serve = start_logged(as_deployed(service_base, asterisk_runtime,
                                         [*_as_unit_user(service_unit), *shlex.split(service_unit["ExecStart"][0])]),
                             _environment(service_unit), serve_log, "/")

        def serving() -> bool:
            if serve is not None and serve.poll() is not None:
                raise AssertionError(f"the service unit exited with {serve.returncode}:\n{serve_log.read_text()}")
            return "BINfoon serving" in serve_log.read_text()
        await until(serving, 60, "the service serving")
        assert _proc_ids(serve.pid)[0] == service.uid
        assert (layout.data_dir / "binfoon.db").stat().st_uid == service.uid
    finally:
        if serve is not None:
            assert _stop(serve) == 0, serve_log.read_text()
        _stop(asterisk)
    assert not instance.is_running()
