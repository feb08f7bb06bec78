"""Finding the Debian mirror and mapping paths into the embedded root."""

from pathlib import Path

import pytest

from ivr.asterisk.install import AsteriskInstallError, AsteriskRuntime, apt_mirror


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_mirror_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AsteriskInstallError, match="debian_mirror"):
        apt_mirror(tmp_path)


def test_paths_map_in_and_out_of_the_root(tmp_path: Path) -> None:
    runtime = AsteriskRuntime(root=tmp_path, version="22.10.1", module_dir="/usr/lib/asterisk/modules")
    assert runtime.host_path("/srv/binfoon/x/spool/a.wav") == tmp_path / "srv/binfoon/x/spool/a.wav"
    assert runtime.inner_path(tmp_path / "srv" / "b") == "/srv/b"
    system = AsteriskRuntime(root=None, version="22.1.0", module_dir="/usr/lib/asterisk/modules")
    assert system.host_path("/var/x") == Path("/var/x") and system.inner_path("/var/x") == "/var/x"
