"""The import contracts (pyproject's ``[tool.importlinter]``) hold, and they do catch a wrong arrow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: a cached graph of the real tree must not answer for the copy.
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_tree_keeps_every_contract() -> None:
    done = _lint(PROJECT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_feature_importing_the_web_breaks_the_contracts(tmp_path: Path) -> None:
    for name in ("ivr", "storage"):
        shutil.copytree(PROJECT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path)
    planted = tmp_path / "ivr" / "delivery" / "outcome.py"
    planted.write_text(planted.read_text() + "\nfrom ivr.web import console  # noqa: E402,F401\n")
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "ivr.delivery.outcome -> ivr.web.console" in done.stdout, done.stdout
