"""Pictures of generated samples for the eye: a piano roll of notes and a spectrogram of sound,
each with the prompt set apart on the same time axis as its continuation.

Drawing only; which picture a domain gets is the tokenizer's call (``Tokenizer.picture``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shortcutlm.plots import _save, plt

PROMPT_SHADE = "#9e9e9e"
JOIN_COLOUR = "#d62728"


def _mark_prompt(ax: "plt.Axes", prompt_seconds: float | None, shade: bool) -> None:
    """Shade (or only mark the end of) the prompt's span and label both sides of the join."""
    if prompt_seconds is None or prompt_seconds <= 0:
        return
    if shade:
        ax.axvspan(0, prompt_seconds, color=PROMPT_SHADE, alpha=0.25, lw=0)
    ax.axvline(prompt_seconds, color=JOIN_COLOUR, lw=1.5, ls="--")
    box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "lw": 0}
    at_top = ax.get_xaxis_transform()  # x in seconds, y in axes fractions
    ax.text(prompt_seconds, 0.97, "continuation →", color=JOIN_COLOUR, fontsize=8, va="top", ha="left",
            transform=at_top, bbox=box)
    ax.text(prompt_seconds, 0.97, "← prompt", color="#333333", fontsize=8, va="top", ha="right",
            transform=at_top, bbox=box)


def piano_roll_figure(starts: np.ndarray, durations: np.ndarray, pitches: np.ndarray,
                      prompt_seconds: float | None = None, title: str = "") -> "plt.Figure":
    """Notes as bars (time in seconds × MIDI pitch); notes of the prompt grey, the continuation's blue."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    starts, durations, pitches = (np.asarray(a, dtype=float) for a in (starts, durations, pitches))
    in_prompt = starts < (prompt_seconds or 0.0) - 1e-6
    for mask, colour in ((in_prompt, "#616161"), (~in_prompt, "#1f77b4")):
        if mask.any():
            ax.barh(pitches[mask], np.maximum(durations[mask], 0.02), left=starts[mask], height=0.8,
                    color=colour, edgecolor="none")
    end = float((starts + durations).max()) if starts.size else 1.0
    ax.set_xlim(0, max(end, prompt_seconds or 0.0) * 1.01)
    low, high = (pitches.min(), pitches.max()) if pitches.size else (60, 72)
    ax.set_ylim(low - 2, high + 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    ax.grid(axis="x", alpha=0.3)
    _mark_prompt(ax, prompt_seconds, shade=True)
    ax.set_title(title)
    return fig


def plot_piano_roll(starts: np.ndarray, durations: np.ndarray, pitches: np.ndarray, out: Path,
                    prompt_seconds: float | None = None, title: str = "") -> Path:
    """:func:`piano_roll_figure` as a PNG."""
    return _save(piano_roll_figure(starts, durations, pitches, prompt_seconds, title), Path(out))


def spectrogram_figure(wave: np.ndarray, rate: int, join_seconds: float | None = None,
                       title: str = "") -> "plt.Figure":
    """Log-magnitude spectrogram (time in seconds × kHz) of a mono wave, the prompt's end marked."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    fig, ax = plt.subplots(figsize=(9, 3.4))
    n_fft = 1024 if rate >= 16000 else 512
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    ax.specgram(wave, NFFT=n_fft, Fs=rate, noverlap=n_fft * 3 // 4, scale="dB", cmap="magma",
                vmin=-120)
    ax.set_xlim(0, wave.size / rate)
    ax.set_yticks(ax.get_yticks(), [f"{t / 1000:g}" for t in ax.get_yticks()])
    ax.set_ylim(0, rate / 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    _mark_prompt(ax, join_seconds, shade=False)
    ax.set_title(title)
    return fig


def plot_spectrogram(wave: np.ndarray, rate: int, out: Path, join_seconds: float | None = None,
                     title: str = "") -> Path:
    """:func:`spectrogram_figure` as a PNG."""
    return _save(spectrogram_figure(wave, rate, join_seconds, title), Path(out))
