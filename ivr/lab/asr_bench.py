"""The transcription benchmark: word error rate at 8 kHz and real-time factor per sample set.

A sample set is a folder of ``<id>.wav`` + ``<id>.txt`` (the exact reference text). Its language is
the last ``-`` part of the folder name (``espeak-nl`` -> ``nl``). The word error rate is measured
only when the model speaks the set's language (``wer_plan``): a multilingual Whisper model speaks the
chain's three (nl, fr, de, each passed explicitly), a Vosk model only its own. Otherwise it is
``None`` with the reason: a Korean model's words for Dutch speech say nothing about accuracy, and no
figure is ever made up.

``--compare`` runs each engine configuration (beam size x compute type) in a fresh subprocess, so
the load time and peak memory reported for it are its own, and recommends one (``recommend``).
All figures are ratios or plain units: RTF = seconds spent preparing and recognising / seconds of audio.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.asr.models import (
    CHAIN_LANGUAGES,
    ModelError,
    chain_languages,
    model_kind,
    model_label,
    model_language,
)
from ivr.asr.wer import corpus_word_error_rate
from ivr.commands.common import CommandError
from ivr.commands.speech import model_for
from ivr.config import Settings

#: The shared Dutch sample sets beside the project (tests and CI have them; a release need not).
DEFAULT_SETS = Path(__file__).resolve().parents[2].parent / "shared" / "audio"
#: The compute types a configuration may use (as ``speech_compute_type`` allows).
COMPUTE_TYPES = ("int8", "int8_float32", "float32")
#: ``--compare``'s rule: the set whose WER decides, and the RTF every set must stay under.
DECIDING_SET = "human-nl"
RTF_LIMIT = 0.5


@dataclass(frozen=True)
class SampleSet:
    """One folder of clips with their reference texts."""

    name: str
    lang: str | None
    clips: list[tuple[Path, str]]


def set_language(folder: Path) -> str | None:
    """The language of a sample set from its folder name: ``espeak-nl`` -> ``nl``; else ``None``."""
    match = re.search(r"-([a-z]{2,3})$", folder.name.lower())
    return match.group(1) if match else None


def find_sets(root: Path) -> list[SampleSet]:
    """Every sub-folder of ``root`` with at least one ``.wav`` that has a ``.txt`` beside it."""
    sets = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        clips = [(wav, wav.with_suffix(".txt").read_text(encoding="utf-8").strip())
                 for wav in sorted(folder.glob("*.wav")) if wav.with_suffix(".txt").is_file()]
        if clips:
            sets.append(SampleSet(folder.name, set_language(folder), clips))
    return sets


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def model_languages(model_path: Path) -> tuple[str | None, list[str]]:
    """The engine of a model folder and the languages whose WER it can be measured on.

    Whisper: the chain's languages it transcribes (all three when multilingual); Vosk: its one
    language, whatever it is (a Korean model is measured on a Korean set)."""
    engine = model_kind(model_path)
    if engine == "vosk":
        lang, _how = model_language(model_path)
        return engine, [lang] if lang else []
    return engine, chain_languages(model_path)[0]


def wer_plan(engine: str | None, model_langs: Sequence[str], set_lang: str | None) -> tuple[str | None, str | None]:
    """(the language to tell the engine, why the WER is not measured or ``None`` when it is).

    Whisper is told the set's language when it is one of the chain's, else Dutch (the clips are
    still timed); Vosk is told nothing (its model has one language)."""
    language = None
    if engine == "whisper":
        language = set_lang if set_lang in CHAIN_LANGUAGES else CHAIN_LANGUAGES[0]
    if set_lang is None:
        return language, "the set's language is unknown (name its folder <name>-<lang>)"
    if set_lang not in model_langs:
        spoken = ", ".join(model_langs) or "unknown"
        return language, f"the model does not transcribe {set_lang} (its languages: {spoken})"
    return language, None


def run_bench(model_path: Path, sets_root: Path, options: Any | None = None) -> tuple[dict[str, Any], list[str]]:
    """Load the model, transcribe every clip of every set; returns (figures, notes for the reader).

    Figures are shaped ``{"model": {"path", "name", "engine", "lang", "languages"}, "options":
    {"beam_size", "compute_type"}, "sets": [{"name", "lang", "files", "wer", "wer_note", "rtf",
    "engine", "model", "uncertain", "uncertain_clips"}], "load_s", "peak_rss_mb"}``. RTF = seconds
    spent preparing and recognising / seconds of audio, clip after clip on one loaded model, as a
    transcription worker goes from recording to recording. ``options`` is an ``EngineOptions``
    (Whisper's beam size and compute type; Vosk ignores it).
    """
    from ivr.asr.transcriber import EngineOptions, open_model, transcribe_file

    sets = find_sets(sets_root)
    if not sets:
        raise ValueError(f"{sets_root}: no sample set (a folder of NN.wav + NN.txt)")
    options = options or EngineOptions()
    engine, langs = model_languages(model_path)
    vosk_lang = model_language(model_path) if engine == "vosk" else (None, "")
    notes = [f"model: {model_label(model_path)} ({engine}); languages measured: {', '.join(langs) or 'none'}"
             + (f" ({vosk_lang[1]})" if engine == "vosk" else "")]
    began = time.perf_counter()
    model = open_model(model_path, options)
    load_s = time.perf_counter() - began
    rows = []
    for sample_set in sets:
        language, not_measured = wer_plan(engine, langs, sample_set.lang)
        pairs, busy_s, audio_s, uncertain, seen = [], 0.0, 0.0, [], (engine, model_label(model_path))
        for wav, reference in sample_set.clips:
            result = transcribe_file(wav, model_path, model=model, language=language, options=options)
            pairs.append((reference, result.text))
            busy_s += result.elapsed_s
            audio_s += result.audio_s
            seen = (result.engine, result.model)
            if result.uncertain:
                uncertain.append(f"{wav.stem}: {result.uncertain_reason or 'uncertain'}")
        wer = round(corpus_word_error_rate(pairs), 4) if not_measured is None else None
        if not_measured:
            notes.append(f"{sample_set.name}: WER not measured: {not_measured}")
        rows.append({"name": sample_set.name, "lang": sample_set.lang, "files": len(sample_set.clips),
                     "wer": wer, "wer_note": not_measured,
                     "rtf": round(busy_s / audio_s, 4) if audio_s else None,
                     "engine": seen[0], "model": seen[1],
                     "uncertain": len(uncertain), "uncertain_clips": uncertain})
    figures = {
        "model": {"path": str(model_path), "name": model_label(model_path), "engine": engine,
                  "lang": vosk_lang[0], "languages": langs},
        "options": {"beam_size": options.beam_size, "compute_type": options.compute_type},
        "sets": rows,
        "load_s": round(load_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    return figures, notes


# --- comparing configurations -------------------------------------------------------------------

def compare_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration and per set, from the figures of each configuration's run."""
    return [{"beam_size": run["options"]["beam_size"], "compute_type": run["options"]["compute_type"],
             "set": s["name"], "files": s["files"], "wer": s["wer"], "rtf": s["rtf"],
             "uncertain": s["uncertain"], "load_s": run["load_s"], "peak_rss_mb": run["peak_rss_mb"]}
            for run in runs for s in run["sets"]]


def recommend(rows: list[dict[str, Any]], *, by_set: str = DECIDING_SET,
              rtf_limit: float = RTF_LIMIT) -> dict[str, Any]:
    """The configuration with the lowest WER on ``by_set`` among those whose RTF is at most
    ``rtf_limit`` on every set; equal WERs go to the faster one (lower mean RTF over the sets).

    Returns ``{"beam_size", "compute_type", "wer", "mean_rtf", "why"}``; ``beam_size`` and
    ``compute_type`` are ``None`` when no configuration qualifies, and ``why`` says which rule failed.
    """
    configs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        configs.setdefault((row["beam_size"], row["compute_type"]), []).append(row)
    rule = f"lowest {by_set} WER with RTF <= {rtf_limit} on every set; equal WER: lower mean RTF"
    candidates = []
    for (beam_size, compute_type), its_rows in configs.items():
        rtfs = [r["rtf"] for r in its_rows]
        if any(rtf is None or rtf > rtf_limit for rtf in rtfs):
            continue
        deciding = next((r["wer"] for r in its_rows if r["set"] == by_set), None)
        if deciding is None:
            continue
        candidates.append((deciding, sum(rtfs) / len(rtfs), beam_size, compute_type))
    if not candidates:
        return {"beam_size": None, "compute_type": None, "wer": None, "mean_rtf": None,
                "why": f"no configuration qualifies ({rule}): every one is too slow on some set "
                       f"or has no {by_set} WER"}
    wer, mean_rtf, beam_size, compute_type = min(candidates, key=lambda c: (c[0], c[1]))
    return {"beam_size": beam_size, "compute_type": compute_type, "wer": wer,
            "mean_rtf": round(mean_rtf, 4), "why": rule}


def run_in_subprocess(model_path: Path, sets_root: Path, beam_size: int, compute_type: str,
                      time_cap_s: float) -> dict[str, Any]:
    """One configuration's figures, measured in a fresh Python process (its own load time and memory)."""
    command = [sys.executable, "-m", "ivr.lab.asr_bench", "--model", str(model_path), "--sets", str(sets_root),
               "--beam-size", str(beam_size), "--compute-type", compute_type, "--time-cap-s", str(time_cap_s)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n  ".join(done.stderr.strip().splitlines()[-8:])
        raise ValueError(f"beam {beam_size} / {compute_type} failed (exit {done.returncode}):\n  {tail}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def run_compare(model_path: Path, sets_root: Path, beam_sizes: Sequence[int], compute_types: Sequence[str],
                time_cap_s: float, rtf_limit: float = RTF_LIMIT) -> dict[str, Any]:
    """Every beam size x compute type, each in its own process; the rows and the recommendation
    (``recommend`` with ``rtf_limit``)."""
    runs = []
    for beam_size in beam_sizes:
        for compute_type in compute_types:
            print(f"beam {beam_size}, {compute_type} ...", file=sys.stderr, flush=True)
            runs.append(run_in_subprocess(model_path, sets_root, beam_size, compute_type, time_cap_s))
    rows = compare_rows(runs)
    return {"model": runs[0]["model"],
            "configurations": [{**run["options"], "load_s": run["load_s"], "peak_rss_mb": run["peak_rss_mb"]}
                               for run in runs],
            "rows": rows,
            "recommended": recommend(rows, rtf_limit=rtf_limit)}


# --- the command --------------------------------------------------------------------------------

def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a comma-separated list of whole numbers") from None
    if not values or any(not 1 <= v <= 10 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: beam sizes are 1..10")
    return values


def _rtf_limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the RTF limit is a number above 0, e.g. 0.5")
    return value


def _compute_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    wrong = [v for v in values if v not in COMPUTE_TYPES]
    if not values or wrong:
        raise argparse.ArgumentTypeError(f"{text!r}: compute types are {', '.join(COMPUTE_TYPES)}")
    return values


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, help="model folder, Whisper or Vosk (default: the configured one)")
    p.add_argument("--sets", type=Path, default=DEFAULT_SETS,
                   help=f"folder of sample sets, each a folder of NN.wav + NN.txt (default: {DEFAULT_SETS})")
    p.add_argument("--beam-size", type=int, choices=range(1, 11), metavar="1..10",
                   help="Whisper beam size (default: speech_beam_size)")
    p.add_argument("--compute-type", choices=COMPUTE_TYPES, help="Whisper compute type (default: speech_compute_type)")


def register_bench(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench transcribe``."""
    p = kinds.add_parser("transcribe", help="word error rate at 8 kHz and real-time factor per sample set")
    _add_run_options(p)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--compare", action="store_true",
                   help="run every --beam-sizes x --compute-types configuration, each in a fresh process, "
                        f"and recommend one (lowest {DECIDING_SET} WER with RTF <= {RTF_LIMIT} on every set)")
    p.add_argument("--beam-sizes", type=_int_list, default=[1, 5], metavar="N,N", help="for --compare (default 1,5)")
    p.add_argument("--compute-types", type=_compute_list, default=["int8", "float32"], metavar="T,T",
                   help="for --compare (default int8,float32)")
    p.add_argument("--rtf-limit", type=_rtf_limit, default=RTF_LIMIT, metavar="X",
                   help=f"for --compare: the RTF a configuration must stay under on every set (default {RTF_LIMIT}; "
                        f"a slower machine than the production one may need more)")
    p.set_defaults(func=cmd_bench_transcribe)


def cmd_bench_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    """Run the transcription benchmark over every sample set and print the figures as JSON."""
    from ivr.asr.transcriber import EngineOptions

    model_path = model_for(settings, args.model)
    if not args.sets.is_dir():
        raise CommandError(f"{args.sets}: no such folder of sample sets (give one with --sets DIR)")
    options = EngineOptions(beam_size=args.beam_size or settings.speech_beam_size,
                            compute_type=args.compute_type or settings.speech_compute_type,
                            time_cap_s=settings.speech_time_cap_s)
    try:
        if args.compare:
            if model_kind(model_path) != "whisper":
                raise CommandError(f"--compare compares Whisper configurations; {model_path} is a Vosk model")
            figures = run_compare(model_path, args.sets, args.beam_sizes, args.compute_types, options.time_cap_s,
                                  args.rtf_limit)
        else:
            figures, notes = run_bench(model_path, args.sets, options)
            for note in notes:
                print(note, file=sys.stderr)
    except (ModelError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    """One configuration, figures as JSON on stdout (what ``--compare`` runs in each subprocess)."""
    from ivr.asr.transcriber import EngineOptions

    parser = argparse.ArgumentParser(prog="python -m ivr.lab.asr_bench")
    _add_run_options(parser)
    parser.add_argument("--time-cap-s", type=float, default=EngineOptions.time_cap_s)
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("--model is required")
    options = EngineOptions(beam_size=args.beam_size or EngineOptions.beam_size,
                            compute_type=args.compute_type or EngineOptions.compute_type,
                            time_cap_s=args.time_cap_s)
    try:
        figures, notes = run_bench(args.model, args.sets, options)
    except (ModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
