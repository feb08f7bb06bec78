"""`binfoon asterisk start|status|stop` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _binfoon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_start_status_stop(tmp_path: Path) -> None:
    env = {**os.environ, "BINFOON_DATA_DIR": str(tmp_path), "BINFOON_AGI_PORT": "4999"}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    started = _binfoon("asterisk", "start", "--name", name, env=env)
    try:
        assert started.returncode == 0, started.stderr
        status = _binfoon("asterisk", "status", "--name", name, env=env)
        assert status.returncode == 0
        state = json.loads(status.stdout)
        assert state["running"] and state["ami"].startswith("127.0.0.1:")
        secret = (Path(state["run_dir"]) / "ami.secret").read_text().strip()
        assert secret not in status.stdout + started.stdout + started.stderr  # never printed
        again = _binfoon("asterisk", "start", "--name", name, env=env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = _binfoon("asterisk", "stop", "--name", name, env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    after = _binfoon("asterisk", "status", "--name", name, env=env)
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False
    import shutil
    shutil.rmtree(state["run_dir"], ignore_errors=True)
