"""The FastAGI secret as an instance renders it: generated once per instance, kept beside the AMI
secret, only in the dialplan Asterisk reads (its user's alone), never in the templates."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from ivr.asterisk.instance import CONF_TEMPLATES, AsteriskInstance, InstanceOptions
from ivr.asterisk.secrets import AgiSecretMissing, read_agi_secret
from tests.unit.asterisk.test_instance_render import _fake_root, _render


def _agi_url(instance: AsteriskInstance) -> str:
    extensions = (instance.run_dir / "etc" / "extensions.conf").read_text()
    found = re.search(r"^BINFOON_AGI = (\S+)$", extensions, re.MULTILINE)
    assert found is not None
    return found.group(1)


def test_the_dialplan_carries_the_instances_agi_secret(tmp_path: Path) -> None:
    instance = _render(tmp_path)
    secret = instance.agi_secret
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    assert _agi_url(instance) == f"agi://127.0.0.1:4999/{secret}"
    assert secret != instance.ami.secret
    assert secret not in "".join(p.read_text() for p in CONF_TEMPLATES.iterdir())
    # Beside the AMI secret; the rendered dialplan is Asterisk's user's alone (like the trunk's secret).
    path = instance.run_dir / "agi.secret"
    assert path.parent == (instance.run_dir / "ami.secret").parent
    info = path.stat()
    # Root renders it for the service, a member of Asterisk's group (fake root: group 101); read-only.
    assert stat.S_IMODE(info.st_mode) == 0o440 and (info.st_uid, info.st_gid) == (0, 101)
    extensions = (instance.run_dir / "etc" / "extensions.conf").stat()
    assert stat.S_IMODE(extensions.st_mode) == 0o400 and extensions.st_uid == 101
    # Asterisk's log directory (its warnings may name an AGI URL) is not for everyone.
    assert stat.S_IMODE((instance.run_dir / "log").stat().st_mode) == 0o750


def test_the_secret_survives_a_restart_and_differs_per_instance(tmp_path: Path) -> None:
    runtime = _fake_root(tmp_path)
    base = runtime.root / "srv" / "binfoon"  # type: ignore[operator]
    a = AsteriskInstance(runtime, InstanceOptions(name="a"), base)
    b = AsteriskInstance(runtime, InstanceOptions(name="b"), base)
    a.render()
    b.render()
    assert a.agi_secret != b.agi_secret
    again = AsteriskInstance(runtime, InstanceOptions(name="a"), base)
    again.render()
    assert again.agi_secret == a.agi_secret and _agi_url(again).endswith("/" + a.agi_secret)


def test_an_instance_never_rendered_has_no_secret_to_read(tmp_path: Path) -> None:
    with pytest.raises(AgiSecretMissing, match="agi.secret"):
        read_agi_secret(tmp_path)
