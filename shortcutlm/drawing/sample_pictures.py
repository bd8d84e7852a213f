"""Pictures of generated samples for the eye: a piano roll of notes and a spectrogram of sound,
each with the prompt set apart on the same time axis as its continuation.

Drawing only; which picture a domain gets is the tokenizer's call (``Tokenizer.picture``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shortcutlm.drawing.plots import _save, plt

PROMPT_SHADE = "#9e9e9e"
JOIN_COLOUR = "#d62728"  # on white (piano roll)
JOIN_ON_DARK = "#00e5ff"  # on the spectrogram's dark colour map


def _mark_prompt(ax: plt.Axes, prompt_seconds: float | None, shade: bool, colour: str = JOIN_COLOUR) -> None:
    """Shade (or only mark the end of) the prompt's span and label both sides of the join."""
    if prompt_seconds is None or prompt_seconds <= 0:
        return
    if shade:
        ax.axvspan(0, prompt_seconds, color=PROMPT_SHADE, alpha=0.25, lw=0)
    ax.axvline(prompt_seconds, color=colour, lw=1.5, ls="--")
    box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "lw": 0}
    for text, ink, side in (("← prompt", "#333333", -1), ("continuation →", "#b31b1b", 1)):
        ax.annotate(text, xy=(prompt_seconds, 0.97), xycoords=ax.get_xaxis_transform(),  # x: seconds, y: axes
                    xytext=(5 * side, 0), textcoords="offset points", color=ink, fontsize=8, va="top",
                    ha="left" if side > 0 else "right", bbox=box)


def piano_roll_figure(starts: np.ndarray, durations: np.ndarray, pitches: np.ndarray,
                      prompt_seconds: float | None = None, title: str = "") -> plt.Figure:
    """Notes as bars (time in seconds × MIDI pitch); notes of the prompt grey, the continuation's blue."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
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


def spectrogram_figure(wave: np.ndarray, rate: int, join_seconds: float | None = None, title: str = "",
                       dynamic_range_db: float = 80.0) -> plt.Figure:
    """Power spectrogram in dB (time in seconds × kHz, the top ``dynamic_range_db`` shown) of a
    wave (channels averaged), the prompt's end marked."""
    from matplotlib import mlab

    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    seconds = wave.size / rate
    n_fft = 1024 if rate >= 16000 else 512
    if wave.size < n_fft:
        wave = np.pad(wave, (0, n_fft - wave.size))
    power, _, _ = mlab.specgram(wave, NFFT=n_fft, Fs=rate, noverlap=n_fft * 3 // 4, mode="psd")
    db = 10 * np.log10(np.maximum(power, 1e-20))
    top = float(db.max())
    fig, ax = plt.subplots(figsize=(7, 3.2))
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, rate / 2000),
                      vmin=top - dynamic_range_db, vmax=top, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01, label="dB")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    _mark_prompt(ax, join_seconds, shade=False, colour=JOIN_ON_DARK)
    ax.set_title(title)
    return fig


def plot_spectrogram(wave: np.ndarray, rate: int, out: Path, join_seconds: float | None = None,
                     title: str = "") -> Path:
    """:func:`spectrogram_figure` as a PNG."""
    return _save(spectrogram_figure(wave, rate, join_seconds, title), Path(out))
