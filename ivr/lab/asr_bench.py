"""The transcription benchmark: word error rate at 8 kHz and real-time factor per sample set.

A sample set is a folder of ``<id>.wav`` + ``<id>.txt`` (the exact reference text). Its language is
the last ``-`` part of the folder name (``espeak-nl`` -> ``nl``). The word error rate is measured
only when the model's language (``ivr.asr.models.model_language``) is known and equals the set's;
otherwise it is ``None``: a Korean model's words for Dutch speech say nothing about accuracy.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.asr.models import ModelError, model_language
from ivr.asr.transcriber import open_model, transcribe_file
from ivr.asr.wer import corpus_word_error_rate
from ivr.commands.common import CommandError
from ivr.commands.speech import model_for
from ivr.config import Settings

#: The shared Dutch sample sets beside the project (tests and CI have them; a release need not).
DEFAULT_SETS = Path(__file__).resolve().parents[2].parent / "shared" / "audio"


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


def run_bench(model_path: Path, sets_root: Path) -> tuple[dict[str, Any], list[str]]:
    """Load the model, transcribe every clip of every set; returns (figures, notes for the reader).

    Figures are shaped ``{"model": {"path", "lang"}, "sets": [{"name", "files", "wer", "rtf"}],
    "load_s", "peak_rss_mb"}``. RTF = seconds spent preparing and recognising / seconds of audio,
    clip after clip on one loaded model, as a transcription worker goes from recording to recording.
    """
    sets = find_sets(sets_root)
    if not sets:
        raise ValueError(f"{sets_root}: no sample set (a folder of NN.wav + NN.txt)")
    lang, how = model_language(model_path)
    notes = [f"model language: {lang or 'unknown'} ({how})"]
    began = time.perf_counter()
    model = open_model(model_path)
    load_s = time.perf_counter() - began
    rows = []
    for sample_set in sets:
        pairs, busy_s, audio_s = [], 0.0, 0.0
        for wav, reference in sample_set.clips:
            result = transcribe_file(wav, model_path, model=model)
            pairs.append((reference, result.text))
            busy_s += result.elapsed_s
            audio_s += result.audio_s
        measured = lang is not None and lang == sample_set.lang
        wer = round(corpus_word_error_rate(pairs), 4) if measured else None
        if not measured:
            notes.append(f"{sample_set.name}: WER not measured (set language {sample_set.lang or 'unknown'}, "
                         f"model language {lang or 'unknown'})")
        rows.append({"name": sample_set.name, "files": len(sample_set.clips), "wer": wer,
                     "rtf": round(busy_s / audio_s, 4) if audio_s else None})
    figures = {
        "model": {"path": str(model_path), "lang": lang},
        "sets": rows,
        "load_s": round(load_s, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    return figures, notes


def register_bench(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``binfoon bench transcribe``."""
    p = kinds.add_parser("transcribe", help="word error rate at 8 kHz and real-time factor per sample set")
    p.add_argument("--model", type=Path, help="Vosk model folder (default: the configured one)")
    p.add_argument("--sets", type=Path, default=DEFAULT_SETS,
                   help=f"folder of sample sets, each a folder of NN.wav + NN.txt (default: {DEFAULT_SETS})")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.set_defaults(func=cmd_bench_transcribe)


def cmd_bench_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    """Run the transcription benchmark over every sample set and print the figures as JSON."""
    model_path = model_for(settings, args.model)
    if not args.sets.is_dir():
        raise CommandError(f"{args.sets}: no such folder of sample sets (give one with --sets DIR)")
    try:
        figures, notes = run_bench(model_path, args.sets)
    except (ModelError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    for note in notes:
        print(note, file=sys.stderr)
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0
