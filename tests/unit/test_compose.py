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
