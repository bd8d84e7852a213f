"""MIDI scores (symusic) as the MIDI tokenizer reads and writes them: checked for corrupt
structure and timing, cut into parts at bar lines, merged into one track, and ended at a bar line.

Kept apart from the tokenizer, which maps scores to ids and back; these know only scores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from shortcutlm.tokenizers.base import TokenizerError

#: Timing beyond these is taken as a corrupt file (see timing_problem).
MAX_BPM = 10_000.0
MAX_SILENCE_S = 600.0


def midi_structure_problem(data: bytes) -> str | None:
    """What is wrong with a Standard MIDI File's chunk structure, or None.

    Hand-written because symusic does not reliably refuse truncated files: it sometimes reads
    past the end of the buffer and returns notes (the same file parsed, or not, from run to run).
    Walking the chunk headers (4-byte id, 4-byte big-endian length) is enough to see truncation.
    """
    if len(data) < 14 or data[:4] != b"MThd":
        return "no MIDI header (MThd)" if data else "empty file"
    declared_tracks = int.from_bytes(data[10:12], "big")
    pos, tracks = 0, 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "big")
        if pos + 8 + size > len(data):
            return (f"truncated: chunk {data[pos:pos + 4]!r} at byte {pos} declares {size} bytes, "
                    f"{len(data) - pos - 8} present")
        tracks += data[pos:pos + 4] == b"MTrk"
        pos += 8 + size
    if tracks < declared_tracks:
        return f"truncated: the header declares {declared_tracks} tracks, {tracks} present"
    return None


def timing_problem(score) -> str | None:
    """What makes a parsed score's timing meaningless, or None: a time division of 0 ticks per
    quarter, a tempo above ``MAX_BPM``, or over ``MAX_SILENCE_S`` without a sounding note (a
    corrupt delta time puts a note days after the rest, and REMI would spell every empty bar)."""
    if score.ticks_per_quarter <= 0:
        return f"time division of {score.ticks_per_quarter} ticks per quarter note"
    for tempo in score.tempos:
        if tempo.mspq <= 0 or 60e6 / tempo.mspq > MAX_BPM:
            return (f"a tempo of {tempo.mspq} microseconds per quarter note at tick {tempo.time} "
                    f"(over {MAX_BPM:,.0f} bpm)")
    gap, start = longest_silence(score.to("second"))
    if gap > MAX_SILENCE_S:
        return f"{gap / 60:,.0f} minutes without a sounding note from {start:,.0f} s on (a corrupt time stamp?)"
    return None


def longest_silence(score) -> tuple[float, float]:
    """``(length, start)`` of the longest stretch without a sounding note, from time 0 on (the score's unit)."""
    notes = [track.notes.numpy() for track in score.tracks if len(track.notes)]
    if not notes:
        return 0.0, 0.0
    start = np.concatenate([n["time"] for n in notes]).astype(np.float64)
    end = start + np.concatenate([n["duration"] for n in notes])
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    covered = np.maximum.accumulate(np.concatenate([[0.0], end[:-1]]))  # how far notes before each onset reach
    gaps = start - covered
    i = int(np.argmax(gaps))
    return float(gaps[i]), float(covered[i])


def read_midi(path: Path, name: str | None = None):
    """A MIDI file as a symusic Score (tick time), or a TokenizerError naming the file."""
    import symusic

    name = name or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TokenizerError(f"{name}: cannot read ({exc})") from exc
    problem = midi_structure_problem(data)
    if problem:
        raise TokenizerError(f"{name}: not a readable MIDI file ({problem})")
    try:
        return symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError for malformed events
        raise TokenizerError(f"{name}: not a readable MIDI file ({exc})") from exc


def _tick_at_second(score, seconds: float) -> int:
    """The tick that plays at ``seconds`` under the score's tempo map (120 bpm before any tempo)."""
    quarter = score.ticks_per_quarter
    changes = sorted((t.time, t.mspq) for t in score.tempos) or [(0, 500_000)]
    if changes[0][0] > 0:
        changes.insert(0, (0, 500_000))
    elapsed = 0.0
    for (tick, mspq), nxt in zip(changes, changes[1:] + [(None, None)]):
        span = None if nxt[0] is None else (nxt[0] - tick) * mspq / 1e6 / quarter
        if span is None or elapsed + span >= seconds:
            return int(round(tick + (seconds - elapsed) * 1e6 / mspq * quarter))
        elapsed += span
    return 0  # unreachable: the last change has no end


def _bar_line_at_or_after(score, tick: int) -> int:
    """The first bar line at or after ``tick``, from the score's time signatures (4/4 before any)."""
    quarter = score.ticks_per_quarter
    signatures = sorted((s.time, s.numerator, s.denominator) for s in score.time_signatures) or [(0, 4, 4)]
    if signatures[0][0] > 0:
        signatures.insert(0, (0, 4, 4))
    bounds = [s[0] for s in signatures[1:]] + [None]
    for (start, num, den), until in zip(signatures, bounds):
        bar = max(1, int(round(num * quarter * 4 / den)))
        line = start + -(-(tick - start) // bar) * bar if tick > start else start
        if until is None or line < until:
            return line
    return tick  # unreachable


def end_at_bar(score, seconds: float):
    """The score cut at the first bar line at or after ``seconds``: later notes dropped, notes
    sounding across the line shortened to end there (symusic's clip keeps or drops them whole).

    When nothing sounds between ``seconds`` and that line (a rest), the cut moves to the bar
    line after the next note's start, so the music still reaches ``seconds``."""
    target = _tick_at_second(score, seconds)
    end = _bar_line_at_or_after(score, target)
    notes = [(n.time, n.end) for track in score.tracks for n in track.notes]
    reached = max((min(stop, end) for start, stop in notes if start < end), default=0)
    later = [start for start, _ in notes if start >= end]
    if reached < target and later:
        end = _bar_line_at_or_after(score, min(later) + 1)
    clipped = score.clip(0, end, clip_end=False)
    for track in clipped.tracks:
        for note in track.notes:
            if note.end > end:
                note.duration = end - note.time
    return clipped


def clip_to_bars(score, span: tuple[float, float]):
    """The part ``[start, end)`` of a score (fractions of its length in ticks), each cut moved to
    the nearest bar line, shifted to start at tick 0. Notes belong to the part they start in; the
    tempo and time signature in force at the cut are kept (symusic's ``clip``). A part shorter
    than a bar can come out empty (and is rejected for having no notes)."""
    from miditok.utils import get_bars_ticks

    end = int(score.end())
    bars = get_bars_ticks(score)

    def cut(fraction: float) -> int:
        if fraction <= 0.0 or fraction >= 1.0:
            return 0 if fraction <= 0.0 else end + 1
        tick = fraction * end
        return min(bars, key=lambda bar: (abs(bar - tick), bar))

    first, last = cut(span[0]), cut(span[1])
    return score.clip(first, last, clip_end=False).shift_time(-first)


def merge_tracks(score):
    """All non-drum notes (and pedals, pitch bends, controls) in one program-0 track; tempo,
    time and key signatures kept."""
    import symusic

    merged = score.copy()
    track = symusic.Track(name="merged", program=0, is_drum=False, ttype="tick")
    for source in score.tracks:
        if not source.is_drum:
            track.notes.extend(source.notes)
            track.pedals.extend(source.pedals)
            track.pitch_bends.extend(source.pitch_bends)
            track.controls.extend(source.controls)
    track.notes.sort()
    track.pedals.sort()
    track.pitch_bends.sort()
    track.controls.sort()
    merged.tracks = [track]
    return merged
