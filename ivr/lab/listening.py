"""A simulated member's ear: has the recording been heard to its end? (pure; no I/O).

A listening phone (``PhoneScript.listens``) presses its key only once it has heard the whole
recording. It hears the call as a stream of 8 kHz samples, read a little at a time while the call
runs, and asks ``EndListener.feed`` after each read. The recording counts as heard to its end when:

1. its *head* (first ``HEAD_S`` of sound) was heard;
2. its *tail* (last ``TAIL_S`` of sound) was heard where the head says it must be, give or take a
   tolerance (``TOLERANCE_S`` + ``DRIFT`` of the distance: frames lost or added on the way);
3. the silence the recording ends with (if any) has been heard too.

"Heard" is a normalised cross-correlation (NCC) per *piece* of ``PIECE_S`` (62.5 ms), both sides in the
telephone band (``BAND_HZ``: what reaches a phone has lost the top of the band). Asterisk, under load,
drops or repeats a frame now and then, and a saturated lab's recorder puts in 10 ms of silence wherever
the call's audio came late; one such slip inside a piece lowers its NCC to ~0.5-0.75. Pieces are
matched one after the other, each within ``SLIP_S`` of where the previous one was found or, past a gap,
up to ``GAP_S`` later (a gap only ever delays what follows it). A template is heard when at least
``PIECES_NEEDED`` of its pieces (those with sound) reach ``threshold``, and, for the tail, one of its
last ``LAST_PIECES`` pieces does: the tolerance at the end is one piece, or 0.25 s when slips spoiled
the very last pieces, and a recording whose last 0.3 s of sound are missing is never heard to its
end. NCC is blind to gain (the trunk's and the app's level) and hardly moved by G.711 (u-law/a-law:
~38 dB SNR).

The bounds were set on what a saturated machine does to the audio: the ears of the calls that were not
confirmed in 3-node, 90-channel benchmarks on 2 cores, kept (``bench cluster --keep-unheard``) and
replayed. First (45 ears): one of a 1 s head's 6 pieces never matching after G.711 and a slip
spoiling another, a gap of 0.25-0.3 s, a slip on the last piece, 3 of the tail's 8 pieces spoiled.
Then (28 ears, with 125 ms pieces, ``SLIP_S`` 60 ms and the full band): 10 ms of silence put in every
0.1-0.3 s through the tail, each spoiling the piece it fell in, and the pieces rich in the top of the
band matching at ~0.7 where every other matched at 1.0. With these values the ear hears all 79 and
still never hears another recording, the recording without its beginning, one cut 0.3 s short, or
any of the 28 with its last 0.3 s of sound silenced (tests/unit/lab/test_listening.py keeps three).

Why the head: a recording may say the same thing twice (a repeated sentence); its tail then also
matches in the middle of the recording. Anchored to a head, the tail is searched only where the
recording ends.

Cost: each feed scans the new samples (plus one piece of overlap) for the head's first
``HEAD_ANCHORS`` pieces (one FFT of the samples, one per piece); every candidate and the tail (by its
first ``TAIL_ANCHORS`` pieces) are checked piece by piece in small windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

RATE_HZ = 8000
#: The parts of the recording that are listened for (seconds of sound), and the pieces they are cut in.
HEAD_S = 2.0
TAIL_S = 1.0
PIECE_S = 0.0625
#: How far one piece may be from where the previous one says (a 20 ms frame and a half: never as far
#: as a pitch period or two, where a sustained vowel's piece matches itself).
SLIP_S = 0.03
#: A piece not heard within ``SLIP_S`` is looked for this far away: a gap. When the call's audio
#: arrives late at the phone's Asterisk (a saturated machine), its recorder fills the late stretch with
#: silence and the speech follows that much later (measured: 0.25-0.3 s at once in a 3-node benchmark
#: on 2 cores); the member hears a glitch, and the rest of the message after it.
GAP_S = 0.4
#: Where the tail may be relative to the head: this, plus DRIFT of the distance between them.
TOLERANCE_S = 0.2
DRIFT = 0.05
#: Share of a template's pieces (with sound) that must be heard.
PIECES_NEEDED = 0.6
#: One of the tail's last this many pieces must be heard: its end is taken from the last one heard.
LAST_PIECES = 4
#: The tail is looked for by any of its first this many pieces (its first 0.25 s may be spoiled).
TAIL_ANCHORS = 5
#: The head likewise: its first pieces follow a seam (the header's end, the recording's start), where
#: a saturated lab's recorder spoils the audio most often.
HEAD_ANCHORS = 5
#: A 20 ms frame whose RMS is below this fraction of the loudest frame's is silence.
SILENCE_RATIO = 0.01
#: The band both the recording and what is heard are compared in: the telephone band. What a phone
#: hears has lost what lies above it on the way (measured at the lab's phones: 3.7-3.9 kHz at -7 dB,
#: 3.9-4 kHz at -28 dB, Asterisk's resampling), and a piece rich in it (a fricative) matched only at NCC
#: ~0.7 against the full-band recording, while every other piece matched at 1.0.
BAND_HZ = (300.0, 3400.0)
#: Half the band filter's length (linear phase: what is heard is compared this many samples late).
FILTER_HALF = 50


def _band_filter(rate_hz: int = RATE_HZ) -> np.ndarray:
    """A linear-phase FIR band-pass for ``BAND_HZ`` (windowed sinc, ``2 * FILTER_HALF + 1`` taps)."""
    lo, hi = (f / rate_hz for f in BAND_HZ)
    t = np.arange(-FILTER_HALF, FILTER_HALF + 1)
    return (2 * hi * np.sinc(2 * hi * t) - 2 * lo * np.sinc(2 * lo * t)) * np.hamming(len(t))


BAND = _band_filter()


def in_band(samples: np.ndarray) -> np.ndarray:
    """``samples`` (8 kHz) limited to ``BAND_HZ``, sample for sample (no delay: zero phase)."""
    return np.convolve(samples.astype(np.float64), BAND, mode="same")


def _template(samples: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm copy of ``samples`` (float64)."""
    t = samples.astype(np.float64) - float(np.mean(samples))
    norm = float(np.linalg.norm(t))
    return t / norm if norm > 0 else t


def _frame_rms(samples: np.ndarray, frame: int) -> np.ndarray:
    n = len(samples) // frame
    x = samples[: n * frame].astype(np.float64).reshape(n, frame)
    return np.sqrt(np.mean(x * x, axis=1))


def sound_span(samples: np.ndarray, rate_hz: int = RATE_HZ) -> tuple[int, int]:
    """First and one-past-last sample of sound in ``samples`` (frames quieter than ``SILENCE_RATIO``
    of the loudest are silence); ``(0, 0)`` for silence only."""
    frame = rate_hz // 50
    rms = _frame_rms(samples, frame)
    if len(rms) == 0 or rms.max() <= 0:
        return (0, 0)
    loud = np.flatnonzero(rms > SILENCE_RATIO * rms.max())
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


@dataclass(frozen=True)
class Piece:
    """One piece of a template: where it starts in the template and its NCC template."""

    offset: int
    samples: np.ndarray


@dataclass(frozen=True)
class Template:
    """A part of the recording, as pieces with sound (silent pieces prove nothing)."""

    length: int
    pieces: tuple[Piece, ...]

    @classmethod
    def of(cls, samples: np.ndarray, loud_rms: float) -> "Template":
        """Cut ``samples`` into pieces; keep those with sound (RMS over ``SILENCE_RATIO`` x ``loud_rms``)."""
        size = int(PIECE_S * RATE_HZ)
        pieces = []
        # Pieces end at the template's end: its last piece is the recording's last sound.
        for end in range(len(samples), size - 1, -size):
            part = samples[end - size: end].astype(np.float64)
            if np.sqrt(np.mean(part * part)) > SILENCE_RATIO * loud_rms:
                pieces.append(Piece(end - size, _template(part)))
        return cls(len(samples), tuple(reversed(pieces)))


@dataclass(frozen=True)
class Reference:
    """What a listening phone listens for: the recording's head and tail."""

    head: Template
    tail: Template
    #: Samples from the head's first to the tail's first, in the recording.
    head_to_tail: int
    #: Samples from the tail's end to the recording's end (the silence it ends with).
    after_tail: int

    @classmethod
    def of(cls, samples: np.ndarray, rate_hz: int = RATE_HZ) -> "Reference":
        """Templates from a recording's samples (8 kHz mono: any scale, int or float)."""
        if rate_hz != RATE_HZ:
            raise ValueError(f"the reference must be {RATE_HZ} Hz, not {rate_hz}")
        start, end = sound_span(samples, rate_hz)
        if end - start < int(2 * PIECE_S * rate_hz):
            raise ValueError("the reference holds too little sound to be recognised")
        # Where its sound is: from the recording itself; what it sounds like: in the telephone band.
        band = in_band(samples)
        loud = float(_frame_rms(band, rate_hz // 50).max())
        head_n = min(int(HEAD_S * rate_hz), end - start)
        tail_n = min(int(TAIL_S * rate_hz), end - start)
        head = Template.of(band[start: start + head_n], loud)
        tail = Template.of(band[end - tail_n: end], loud)
        if len(head.pieces) < 2 or len(tail.pieces) < 2:
            raise ValueError("the reference's head or tail holds too little sound to be recognised")
        return cls(head, tail, (end - tail_n) - start, len(samples) - end)


@dataclass(frozen=True)
class HeardEnd:
    """Where, in the samples heard since the phone answered, the recording was heard to its end."""

    #: Sample index (8 kHz, from the first sample heard) of the recording's first sound and its end.
    head_at: int
    end_at: int
    #: Mean NCC of the pieces of the head and of the tail.
    head_score: float
    tail_score: float

    @property
    def end_s(self) -> float:
        """The recording's end in seconds of audio heard."""
        return self.end_at / RATE_HZ


def ncc(template: np.ndarray, x: np.ndarray) -> np.ndarray:
    """NCC of a zero-mean unit-norm ``template`` at every lag of ``x`` where it fits whole (FFT)."""
    return ncc_many([template], x)[0]


def ncc_many(templates: list[np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    """``ncc`` of several templates of one length over the same ``x``: one FFT of ``x`` for them all.
    Silence (no energy) scores 0, not a division by zero."""
    m, n = (len(templates[0]) if templates else 0), len(x)
    if n < m or m == 0:
        return [np.zeros(0) for _ in templates]
    nfft = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(x, nfft)
    csum = np.concatenate(([0.0], np.cumsum(x)))
    csq = np.concatenate(([0.0], np.cumsum(x * x)))
    energy = (csq[m:] - csq[:-m]) - (csum[m:] - csum[:-m]) ** 2 / m
    scale = np.where(energy > 1e-9 * m, 1.0 / np.sqrt(np.maximum(energy, 1e-30)), 0.0)
    return [np.fft.irfft(spectrum * np.conj(np.fft.rfft(t, nfft)), nfft)[: n - m + 1] * scale for t in templates]


def _peaks(scores: np.ndarray, threshold: float, spacing: int) -> list[int]:
    """The best score's index in each run of scores >= ``threshold`` (runs closer than ``spacing`` join)."""
    above = np.flatnonzero(scores >= threshold)
    peaks: list[int] = []
    run_start = 0
    for i in range(1, len(above) + 1):
        if i == len(above) or above[i] - above[i - 1] > spacing:
            run = above[run_start:i]
            peaks.append(int(run[np.argmax(scores[run])]))
            run_start = i
    return peaks


@dataclass(frozen=True)
class _Stream:
    """The samples kept, from absolute index ``start``."""

    samples: np.ndarray
    start: int

    def best_near(self, piece: np.ndarray, at: int, slip: int, late: int | None = None) -> tuple[int, float]:
        """Where ``piece`` matches best from ``slip`` before ``at`` (absolute) to ``late`` after it (``slip``
        when not given), and its NCC."""
        lo = max(at - slip, self.start)
        x = self.samples[lo - self.start: at + (slip if late is None else late) + len(piece) - self.start]
        scores = ncc(piece, x)
        if len(scores) == 0:
            return at, 0.0
        best = int(np.argmax(scores))
        return lo + best, float(scores[best])


def _heard(template: Template, stream: _Stream, anchor: int, anchor_at: int, threshold: float,
           last_needed: bool) -> tuple[int, int, float] | None:
    """Was ``template`` heard with its piece ``anchor`` at ``anchor_at``? Its start, end and mean NCC.

    Pieces are followed outwards from the anchor, each near where the last one heard says it is (or,
    past a gap, within ``GAP_S`` of it)."""
    slip, gap = int(SLIP_S * RATE_HZ), int(GAP_S * RATE_HZ)
    pieces = template.pieces
    scores = {anchor: 1.0}
    found = {anchor: anchor_at}
    for order in (range(anchor + 1, len(pieces)), range(anchor - 1, -1, -1)):
        ref_k, ref_at = anchor, anchor_at
        forward = order.step == 1
        for k in order:
            expected = ref_at + pieces[k].offset - pieces[ref_k].offset
            at, score = stream.best_near(pieces[k].samples, expected, slip)
            if score < threshold:  # a gap before this piece? The pieces after it are relative to it
                # A gap only ever delays what follows it: a later piece is looked for later, an earlier
                # one earlier (never the other way: a sustained vowel matches itself a pitch period away).
                at_gap, score_gap = (stream.best_near(pieces[k].samples, expected, slip, gap) if forward
                                     else stream.best_near(pieces[k].samples, expected, gap, slip))
                if score_gap >= threshold:
                    at, score = at_gap, score_gap
            scores[k] = score
            if score >= threshold:
                ref_k, ref_at = k, at
                found[k] = at
    heard = sum(1 for s in scores.values() if s >= threshold)
    if heard < math.ceil(PIECES_NEEDED * len(pieces)):
        return None
    if last_needed and not any(k in found for k in range(len(pieces) - LAST_PIECES, len(pieces))):
        return None
    first, last = min(found), max(found)
    # Each end taken from the piece heard nearest to it (slips move them apart).
    start = found[first] - pieces[first].offset
    end = found[last] - pieces[last].offset + template.length
    return start, end, float(np.mean(list(scores.values())))


@dataclass
class EndListener:
    """Listens, feed after feed, for ``reference`` heard from its head to its end."""

    reference: Reference
    threshold: float = 0.8
    #: Samples heard so far, and the ones kept (from absolute index ``_kept_from``).
    heard: int = 0
    _kept: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _kept_from: int = 0
    #: Head candidates to check once heard whole: (anchor piece, where it matched).
    _candidates: list[tuple[int, int]] = field(default_factory=list)
    #: Heads heard whose tail is still to come: (head start, head score).
    _heads: list[tuple[int, float]] = field(default_factory=list)
    #: A tail found, waiting for the recording's closing silence to be heard.
    _found: HeardEnd | None = None
    result: HeardEnd | None = None
    #: The samples heard whose in-band value is not known yet (the filter needs ``FILTER_HALF`` beyond),
    #: with the ``FILTER_HALF`` before them; silence before the first.
    _raw: np.ndarray = field(default_factory=lambda: np.zeros(FILTER_HALF))

    def feed(self, samples: np.ndarray) -> HeardEnd | None:
        """Hear ``samples`` (the next ones, 8 kHz); the end of the recording once it has been heard."""
        if self.result is not None:
            return self.result
        before = self.heard
        # In band, as the recording's templates are; ``heard`` counts the samples known in band (the
        # filter is FILTER_HALF samples, 6 ms, behind the ear), at the same indices as the samples heard.
        self._raw = np.concatenate((self._raw, samples.astype(np.float64)))
        band = np.convolve(self._raw, BAND, mode="valid") if len(self._raw) >= len(BAND) else np.zeros(0)
        self._raw = self._raw[len(band):]
        self._kept = np.concatenate((self._kept, band))
        self.heard += len(band)
        head = self.reference.head
        # The head's first pieces, where they end in the new samples (a slip may spoil some).
        anchors = [p.samples for p in head.pieces[:HEAD_ANCHORS]]
        scan_from = max(self._kept_from, before - len(anchors[0]) + 1)
        for anchor, scores in enumerate(ncc_many(anchors, self._kept[scan_from - self._kept_from:])):
            peaks = _peaks(scores, self.threshold, len(anchors[anchor]))
            self._candidates += [(anchor, scan_from + lag) for lag in peaks]
        self._check_heads()
        if self._found is None:
            self._found = self._check_tails()
        self._forget()
        if self._found is not None and self.heard >= self._found.end_at:
            self.result = self._found
        return self.result

    @property
    def _stream(self) -> _Stream:
        return _Stream(self._kept, self._kept_from)

    def _check_heads(self) -> None:
        head = self.reference.head
        margin = int(SLIP_S * RATE_HZ) * 2
        waiting = []
        for anchor, at in self._candidates:
            start = at - head.pieces[anchor].offset
            if self.heard < start + head.length + margin:
                waiting.append((anchor, at))
                continue
            if any(abs(start - h) <= int(SLIP_S * RATE_HZ) for h, _ in self._heads):
                continue  # another of its anchors already found this head
            heard = _heard(head, self._stream, anchor, at, self.threshold, last_needed=False)
            if heard is not None and all(abs(heard[0] - h) > head.length // 2 for h, _ in self._heads):
                self._heads.append((heard[0], heard[2]))
        self._candidates = waiting

    def _tolerance(self) -> int:
        return int((TOLERANCE_S + DRIFT * self.reference.head_to_tail / RATE_HZ) * RATE_HZ)

    def _check_tails(self) -> HeardEnd | None:
        """Look for the tail of every head, in the part of its window heard so far: the end is known as
        soon as the tail's last piece has been heard (one ``SLIP_S`` later, to be sure of its place)."""
        ref, tol, slip = self.reference, self._tolerance(), int(SLIP_S * RATE_HZ)
        tail = ref.tail
        stream = self._stream
        waiting = []
        for head_at, head_score in self._heads:
            expected = head_at + ref.head_to_tail
            for anchor in range(min(TAIL_ANCHORS, len(tail.pieces))):
                piece = tail.pieces[anchor]
                lo = max(expected + piece.offset - tol, stream.start)
                hi = min(expected + piece.offset + tol + len(piece.samples), self.heard)
                for lag in _peaks(ncc(piece.samples, stream.samples[lo - stream.start: hi - stream.start]),
                                  self.threshold, len(piece.samples)):
                    heard = _heard(tail, stream, anchor, lo + lag, self.threshold, last_needed=True)
                    if heard is not None and self.heard >= heard[1] + slip:
                        return HeardEnd(head_at, heard[1] + ref.after_tail, head_score, heard[2])
            if self.heard < expected + tail.length + tol + 2 * slip:
                waiting.append((head_at, head_score))  # its tail may still come
        self._heads = waiting
        return None

    def _forget(self) -> None:
        """Keep only what a later feed still needs: the overlap, the candidates and the tail windows."""
        ref = self.reference
        slip = int(SLIP_S * RATE_HZ)
        keep_from = self.heard - ref.head.length - 4 * slip
        for anchor, at in self._candidates:
            keep_from = min(keep_from, at - ref.head.pieces[anchor].offset - 2 * slip)
        for head_at, _ in self._heads:
            keep_from = min(keep_from, head_at + ref.head_to_tail - self._tolerance() - 2 * slip)
        keep_from = max(keep_from, self._kept_from)
        self._kept = self._kept[keep_from - self._kept_from:]
        self._kept_from = keep_from


def heard_to_end(reference: Reference, heard: np.ndarray, threshold: float = 0.8,
                 chunk: int = 0) -> HeardEnd | None:
    """Was ``reference`` heard from its head to its end in ``heard`` (8 kHz)? Fed whole, or in
    ``chunk``-sample pieces as a phone hears it."""
    listener = EndListener(reference, threshold)
    step = chunk or max(len(heard), 1)
    for i in range(0, max(len(heard), 1), step):
        if listener.feed(heard[i: i + step]) is not None:
            break
    return listener.result
