"""The field's own measures of a target against its reference, from well-kept libraries.

* notes (transcription): note precision, recall and F1 with ``mir_eval.transcription`` (MIREX's
  definition: a note matches when its pitch is within 50 cents and its onset within 50 ms; with
  ``offset`` its offset must also fall within 20% of the note's length or 50 ms), onset only and
  onset + offset;
* spectral (synthesis, speech): cosine similarity of log-mel frames and of chroma frames between the
  generated and the reference audio, frame by frame over their common length (torchaudio's mel
  filterbank; chroma folds the same STFT's bins onto the twelve pitch classes);
* words (speech transcription): word and character error rates with ``jiwer``.

Each figure means little alone: :mod:`~shortcutlm.pairs.scores` puts the same figure for a random
other reference (chance) and for the reference through its tokenizer and back (the ceiling) beside it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 24000
N_FFT, HOP, N_MELS = 2048, 480, 64


# ------------------------------------------------------------------------------ notes

def midi_notes(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(intervals [n, 2] in seconds, pitches [n] in Hz)`` of every note of every track of a MIDI file."""
    import mir_eval
    import symusic

    score: Any = symusic.Score(str(path))
    score = score.to("second")
    rows = [(n.start, n.start + max(n.duration, 1e-3), n.pitch) for track in score.tracks for n in track.notes]
    if not rows:
        return np.zeros((0, 2)), np.zeros(0)
    table = np.array(sorted(rows), dtype=float)
    return table[:, :2], mir_eval.util.midi_to_hz(table[:, 2])


def note_scores(reference: str | Path, estimate: str | Path, onset_tolerance: float = 0.05) -> dict[str, float]:
    """Note P/R/F1 of ``estimate`` against ``reference`` (MIDI files), onset only and onset + offset.
    An estimate without notes scores 0 (mir_eval warns and says so)."""
    import warnings

    import mir_eval

    ref_i, ref_p = midi_notes(reference)
    est_i, est_p = midi_notes(estimate)
    if len(ref_p) == 0:
        raise ValueError(f"{reference}: the reference holds no notes; nothing to score against")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "estimate notes are empty": scored 0, as it should be
        for name, ratio in (("onset", None), ("onset_offset", 0.2)):
            p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
                ref_i, ref_p, est_i, est_p, onset_tolerance=onset_tolerance, offset_ratio=ratio)
            out.update({f"{name}_precision": float(p), f"{name}_recall": float(r), f"{name}_f1": float(f)})
    return out


# ------------------------------------------------------------------------------ audio

def _load(path: str | Path) -> np.ndarray:
    import soundfile
    import torch
    import torchaudio.functional as AF

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = torch.from_numpy(audio.mean(axis=1))
    if rate != SAMPLE_RATE:
        mono = AF.resample(mono, rate, SAMPLE_RATE)
    return mono.numpy()


def _features(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log-mel [frames, 64], chroma [frames, 12])`` of mono audio at :data:`SAMPLE_RATE`."""
    import torch
    import torchaudio.functional as AF

    wave = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    if wave.numel() < N_FFT:
        wave = torch.nn.functional.pad(wave, (0, N_FFT - wave.numel()))
    power = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True).abs() ** 2  # [F, T]
    mel = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE)  # [F, M]
    log_mel = torch.log(mel.T @ power + 1e-6).T
    freqs = torch.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    audible = (freqs >= 27.5) & (freqs <= 4200.0)  # piano range: the pitch classes of notes, not of hiss
    classes = (torch.round(12 * torch.log2(freqs[audible] / 440.0)).long() + 9) % 12  # 0 = C
    chroma = torch.zeros(12, power.shape[1]).index_add_(0, classes, power[audible])
    return log_mel.numpy(), chroma.T.numpy()


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    keep = norms > 0
    if not keep.any():
        return 0.0
    return float(((a * b).sum(axis=1)[keep] / norms[keep]).mean())


def spectral_similarity(reference: str | Path, estimate: str | Path) -> dict[str, float]:
    """Mean frame-wise cosine similarity of log-mel (mean removed per file) and of chroma frames."""
    ref_mel, ref_chroma = _features(_load(reference))
    est_mel, est_chroma = _features(_load(estimate))
    return {"log_mel_cosine": _mean_cosine(ref_mel - ref_mel.mean(), est_mel - est_mel.mean()),
            "chroma_cosine": _mean_cosine(ref_chroma, est_chroma)}


# ------------------------------------------------------------------------------ words

def normalise_words(text: str) -> str:
    """Upper case, letters, digits and apostrophes only, single spaces (LibriSpeech's transcripts' form)."""
    return " ".join(re.sub(r"[^0-9A-Z' ]+", " ", text.upper()).split())


def word_errors(reference: str, estimate: str) -> dict[str, float]:
    """Word and character error rates of ``estimate`` against ``reference`` (both normalised)."""
    import jiwer

    ref, est = normalise_words(reference), normalise_words(estimate)
    if not ref:
        raise ValueError("the reference transcript is empty; nothing to score against")
    return {"wer": float(jiwer.wer(ref, est)), "cer": float(jiwer.cer(ref, est))}


def score_files(metric: str, reference: str | Path, estimate: str | Path) -> dict[str, float]:
    """The metric a task names (:class:`~shortcutlm.pairs.tasks.Task`) on two files of the target's kind."""
    if metric == "notes":
        return note_scores(reference, estimate)
    if metric == "spectral":
        return spectral_similarity(reference, estimate)
    if metric == "words":
        return word_errors(Path(reference).read_text(encoding="utf-8"), Path(estimate).read_text(encoding="utf-8"))
    raise ValueError(f"unknown metric {metric!r}")
