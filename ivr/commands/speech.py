"""``binfoon transcribe``, ``binfoon models ...`` and ``binfoon bench transcribe``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ivr.asr.models import (
    OFFICIAL_MODELS,
    ModelError,
    configured_model_path,
    default_install_dir,
    install_official,
    model_label,
    model_language,
    model_problem,
    read_manifest,
    verify_model_dir,
)
from ivr.commands.common import CommandError
from ivr.config import Settings

#: The sample sets beside the project (``../shared/audio``), used when ``--sets`` is not given.


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon transcribe`` and ``binfoon models``."""
    p = sub.add_parser("transcribe", help="print the transcript of audio files (any format pydub reads)")
    p.add_argument("audio", nargs="+", type=Path, metavar="AUDIO")
    p.add_argument("--model", type=Path, help="Vosk model folder (default: the configured one)")
    p.add_argument("--json", action="store_true", help="print text, word timings and confidence as JSON")
    p.set_defaults(func=cmd_transcribe)

    models = sub.add_parser("models", help="speech recognition models")
    actions = models.add_subparsers(dest="action", required=True)
    inst = actions.add_parser("install", help="download, verify against the manifest and unpack a model")
    inst.add_argument("lang", choices=sorted(OFFICIAL_MODELS), help="language of the official model")
    inst.add_argument("--path", type=Path, help="where to unpack it (default: <cache_dir>/models/<name>)")
    inst.add_argument("--from-zip", type=Path, metavar="ZIP", help="install from a zip downloaded elsewhere")
    inst.add_argument("--url", help="download from this mirror of the official zip instead")
    inst.set_defaults(func=cmd_models_install)
    actions.add_parser("status", help="which model is in use, or that none is").set_defaults(func=cmd_models_status)


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
    from ivr.asr.transcriber import load_model, transcribe_file

    model_path = model_for(settings, args.model)
    try:
        model = load_model(str(model_path))
    except ModelError as exc:
        raise CommandError(str(exc)) from exc
    for audio in args.audio:
        if not audio.is_file():
            raise CommandError(f"{audio}: no such file")
        try:
            result = transcribe_file(audio, model_path, model=model)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if args.json:
            print(json.dumps({"file": str(audio), **result.to_dict()}, ensure_ascii=False))
        elif len(args.audio) > 1:
            print(f"{audio}: {result.text}")
        else:
            print(result.text)
    return 0


def cmd_models_install(settings: Settings, args: argparse.Namespace) -> int:
    """Install the official model for a language, verified file by file against its manifest."""
    spec = OFFICIAL_MODELS[args.lang]
    target = (args.path.expanduser().resolve() if args.path else default_install_dir(settings, spec))
    try:
        report = install_official(spec, target, zip_path=args.from_zip, url=args.url)
    except ModelError as exc:
        raise CommandError(str(exc)) from exc
    print(f"installed {spec.name} in {report.target} ({report.files} files match the manifest)")
    if report.skipped:
        print(f"not installed (not in the manifest): {', '.join(report.skipped)}")
    if configured_model_path(settings).resolve() != report.target.resolve():
        print(f"to use it, set speech_model_path = \"{report.target}\" in binfoon.toml "
              f"(or BINFOON_SPEECH_MODEL_PATH)")
    return 0


def cmd_models_status(settings: Settings, args: argparse.Namespace) -> int:
    """Say which model transcribes recordings, or that none does and recordings stay untranscribed."""
    path = configured_model_path(settings)
    problem = model_problem(path)
    if problem:
        print(f"no speech model in use: {problem}.")
        print("Recordings are kept untranscribed until a model is there; then the backlog is transcribed.")
        print("Install the Dutch model with `binfoon models install nl`, or set speech_model_path.")
    else:
        lang, how = model_language(path)
        print(f"speech model in use: {path}")
        print(f"name: {model_label(path)}; language: {lang or 'unknown'} ({how})")
        spec = next((s for s in OFFICIAL_MODELS.values() if s.name == path.name), None)
        if spec is not None:
            problems = verify_model_dir(path, read_manifest(spec.manifest))
            print("manifest: every file matches" if not problems
                  else "manifest: MISMATCH\n  " + "\n  ".join(problems))
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
