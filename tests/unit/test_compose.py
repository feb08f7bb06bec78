"""docker-compose.yml against the Compose Specification schema (no Docker engine runs here).

The schema is the compose-spec JSON schema shipped inside PyPI's docker-compose 1.29.2 wheel
(``compose/config/compose_spec.json``), fetched once with pip and cached.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BINFOON_CACHE_DIR") or Path.home() / ".cache" / "binfoon") / "compose-spec"


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    schema_file = CACHE / "compose_spec.json"
    if not schema_file.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "docker-compose==1.29.2",
                        "-d", str(CACHE)], check=True, capture_output=True)
        wheel = next(CACHE.glob("docker_compose-1.29.2-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            schema_file.write_bytes(archive.read("compose/config/compose_spec.json"))
    return json.loads(schema_file.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "docker-compose.yml").read_text())


def test_compose_file_is_valid(compose_schema: dict[str, Any], compose: dict[str, Any]) -> None:
    jsonschema.Draft201909Validator(compose_schema).validate(compose)


def test_a_broken_compose_file_is_rejected(compose_schema: dict[str, Any], compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["app"]["network_mode"] = ["not", "a", "string"]
    broken["services"]["asterisk"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(compose_schema).validate(broken)


def test_ami_and_agi_are_never_published(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            assert not any(port in str(mapping) for port in ("5038", "4573")), (name, mapping)
    assert compose["services"]["app"]["network_mode"] == "service:asterisk"


def test_no_inline_secrets(compose: dict[str, Any]) -> None:
    text = (PROJECT / "docker-compose.yml").read_text().lower()
    for service in compose["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if "password" in key.lower() or "secret" in key.lower():
                assert key.endswith("_FILE"), key
            assert not re.search(r"//[^/@:]+:[^/@]+@", str(value)), f"password inline in {key}"
    assert "postgres_password:" in text and "file: ./secrets/" in text


# -- built images, PostgreSQL by default, published ports = rendered ports (issue 13 item 6) --------
def test_images_are_built_and_nothing_is_installed_at_start(compose: dict[str, Any]) -> None:
    for name in ("asterisk", "app"):
        service = compose["services"][name]
        dockerfile = PROJECT / service["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        assert "command" not in service and "entrypoint" not in service, name  # the image's own ENTRYPOINT
        assert not any(":ro" in str(v) and "/opt/binfoon" in str(v) for v in service.get("volumes", [])), name
    asterisk = (PROJECT / compose["services"]["asterisk"]["build"]["dockerfile"]).read_text()
    assert asterisk.startswith("#") and "FROM debian:testing-slim" in asterisk and "asterisk-modules" in asterisk
    app = (PROJECT / compose["services"]["app"]["build"]["dockerfile"]).read_text()
    users = [line.split()[1] for line in app.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users


def test_postgres_starts_by_default_and_the_app_waits_for_its_health(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert "profiles" not in postgres and postgres["healthcheck"]["test"]
    assert compose["services"]["app"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert compose["services"]["app"]["environment"]["BINFOON_DATABASE_URL"].startswith("postgresql")


def _published_udp(service: dict[str, Any]) -> set[int]:
    """Container-side UDP ports a service publishes (``"a-b:c-d/udp"`` forms), checking host = container."""
    ports: set[int] = set()
    for mapping in service.get("ports", []):
        spec, _, proto = str(mapping).partition("/")
        if proto != "udp":
            continue
        host, _, inside = spec.rpartition(":")
        assert host == inside, f"{mapping}: the host port must be the container's (SDP and Via name it)"
        low, _, high = inside.partition("-")
        ports |= set(range(int(low), int(high or low) + 1))
    return ports


def _rendered_udp(compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Render the instance with the Asterisk container's environment; the UDP ports it binds."""
    import configparser

    from ivr.asterisk.install import AsteriskRuntime
    from ivr.commands import asterisk as asterisk_cmd
    from ivr.config import load_settings

    env = {k: str(v) for k, v in compose["services"]["asterisk"]["environment"].items()}
    env["BINFOON_CONFIG"] = os.devnull
    settings = load_settings(environ=env)
    # The container's system Asterisk is not on this machine: only the runtime lookup is replaced;
    # the settings -> instance -> configuration path is the real one.
    monkeypatch.setattr(asterisk_cmd, "find_runtime", lambda _settings: AsteriskRuntime(
        root=None, version="22.0.0", module_dir="/usr/lib/x86_64-linux-gnu/asterisk/modules"))
    instance = asterisk_cmd.instance_for(settings, "default", tmp_path / "asterisk")
    instance.render()
    etc = instance.run_dir / "etc"
    rtp = configparser.ConfigParser(strict=False, interpolation=None)
    rtp.read_string((etc / "rtp.conf").read_text())
    ports = set(range(int(rtp["general"]["rtpstart"]), int(rtp["general"]["rtpend"]) + 1))
    binds = re.findall(r"^bind\s*=\s*([0-9.]+):(\d+)", (etc / "pjsip.conf").read_text(), re.MULTILINE)
    assert binds, "no SIP transport rendered"
    assert all(address == "0.0.0.0" for address, _port in binds), binds  # reachable from the published side
    return ports | {int(port) for _address, port in binds}


def test_published_ports_are_the_rendered_ones(compose: dict[str, Any], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert _published_udp(compose["services"]["asterisk"]) == _rendered_udp(compose, tmp_path, monkeypatch)


def test_a_port_mismatch_is_caught(compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shifted = copy.deepcopy(compose)
    shifted["services"]["asterisk"]["environment"]["BINFOON_RTP_PORT_END"] = "20099"
    assert _published_udp(shifted["services"]["asterisk"]) != _rendered_udp(shifted, tmp_path, monkeypatch)


# -- BINFOON_CONFIG names a file the container has (review of issue 16: both containers exited 1) ----
def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined, instructions = "", []
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not joined:
            continue
        joined += line.rstrip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        if joined.strip():
            word, _, rest = joined.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
        joined = ""
    return instructions


def _image_env_and_files(text: str) -> tuple[dict[str, str], set[str]]:
    """The ENV an image sets and the absolute paths of the files its COPY instructions ship."""
    import shlex

    env: dict[str, str] = {}
    shipped: set[str] = set()
    workdir = "/"
    for word, rest in _dockerfile_instructions(text):
        if word == "WORKDIR":
            workdir = os.path.join(workdir, rest)
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif word == "COPY":
            *sources, dest = [part for part in shlex.split(rest) if not part.startswith("--")]
            dest = os.path.join(workdir, dest)
            for source in sources:
                local = PROJECT / source
                if local.is_dir():
                    shipped |= {os.path.normpath(os.path.join(dest, str(f.relative_to(local))))
                                for f in local.rglob("*") if f.is_file()}
                elif len(sources) > 1 or dest.endswith("/"):
                    shipped.add(os.path.normpath(os.path.join(dest, local.name)))
                else:
                    shipped.add(os.path.normpath(dest))
    return env, shipped


def _mounted(compose: dict[str, Any], service: dict[str, Any]) -> set[str]:
    """Container paths compose mounts into a service: volumes, secrets and configs targets."""
    targets: set[str] = set()
    for volume in service.get("volumes", []):
        targets.add(volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1])
    for kind, default_dir in (("secrets", "/run/secrets"), ("configs", "/")):
        for item in service.get(kind, []):
            name = item if isinstance(item, str) else item["source"]
            target = None if isinstance(item, str) else item.get("target")
            targets.add(target if target and target.startswith("/") else f"{default_dir.rstrip('/')}/{target or name}")
    return {os.path.normpath(target) for target in targets}


def _missing_config_files(compose: dict[str, Any]) -> list[str]:
    """Each service whose effective BINFOON_CONFIG names a file its image neither ships nor gets mounted."""
    missing = []
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        image_env, shipped = _image_env_and_files((PROJECT / service["build"]["dockerfile"]).read_text())
        named = (service.get("environment") or {}).get("BINFOON_CONFIG", image_env.get("BINFOON_CONFIG"))
        if not named or named == os.devnull:
            continue
        path = os.path.normpath(named)
        mounts = _mounted(compose, service)
        if path not in shipped and path not in mounts and not any(path.startswith(m + "/") for m in mounts):
            missing.append(f"{name}: BINFOON_CONFIG={named}")
    return missing


def test_binfoon_config_names_a_file_the_container_has(compose: dict[str, Any]) -> None:
    assert _missing_config_files(compose) == []


def test_a_binfoon_config_nobody_provides_is_caught(compose: dict[str, Any]) -> None:
    named = copy.deepcopy(compose)
    named["services"]["app"]["environment"]["BINFOON_CONFIG"] = "/etc/binfoon/binfoon.toml"
    assert _missing_config_files(named) == ["app: BINFOON_CONFIG=/etc/binfoon/binfoon.toml"]
    # Mounted into the container: fine.
    named["services"]["app"]["volumes"].append("./binfoon.toml:/etc/binfoon/binfoon.toml:ro")
    assert _missing_config_files(named) == []
    # Shipped by the image (a file the Dockerfile copies): fine.
    named["services"]["app"]["environment"]["BINFOON_CONFIG"] = "/opt/binfoon/app/pyproject.toml"
    named["services"]["app"]["volumes"].pop()
    assert _missing_config_files(named) == []


def test_dockerfile_env_is_read_across_continuation_lines() -> None:
    env, shipped = _image_env_and_files("FROM x\nWORKDIR /opt/a\nCOPY pyproject.toml ./\n"
                                        "ENV A=1 \\\n    BINFOON_CONFIG=/etc/b.toml\n")
    assert env == {"A": "1", "BINFOON_CONFIG": "/etc/b.toml"} and shipped == {"/opt/a/pyproject.toml"}
