"""Audio read for the acoustic codecs a bounded block at a time, equal to whole-file reading.

A whole file read, downmixed and resampled at once held several copies of it (a 60-minute
44.1 kHz stereo WAV took 3.3 GB). Here a file is read ``seconds`` at a time with soundfile's
``SoundFile``, each block is downmixed on its own (a per-sample mean, so blocks change nothing)
and fed to :class:`BlockResampler`, so what is held is a block, whatever the file's length.

Resampling is ``torchaudio.functional.resample`` with its defaults (windowed sinc, Hann window,
6 zero crossings, roll-off 0.99), computed the way it computes it: the input, padded with
``w`` zeros on the left and ``w + o`` on the right, is convolved with stride ``o`` by ``n``
filters (``o / n`` the rates over their gcd), so output block ``j`` (``n`` samples) depends on
input samples ``[j·o − w, j·o + o + w)`` only. Blocks are computed once their input has
arrived, with the same kernel and arithmetic, so the samples equal the whole-file call's bit
for bit, whatever the block sizes.

Two deliberate differences from ``resample`` itself. A single row (mono) is convolved as two
equal rows: torch (2.11, CPU) computes a one-row conv1d by kernels whose rounding depends on
the call's length (a one-block call, and any call of the 48 or 96 kHz to 24 kHz filters,
whose n is 1), while two rows take one path at any length; so for those two rates a mono
file's samples differ from torchaudio's one-row call in the last bit. And the length is
``ceil(n·N / o)`` in integers, where torchaudio computes it through a float32 tensor, which
can be a few samples off for files of hours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from shortcutlm.documents import Document
from shortcutlm.tokenizers.base import TokenizerError

MIN_SAMPLE_RATE = 1000  # a header claiming 1 Hz turns 0.3 s of samples into hours at the codec's rate
MAX_RESAMPLE_TAPS = 1 << 22  # a 16 MB filter; 11025, 22050, 44100, 8000, 16000, 32000, 96000 Hz need < 50k


def rate_problem(rate: int, codec_rate: int) -> str:
    """Why a file's sample rate cannot be resampled to the codec's, or "".

    The resampling filter has (codec rate / g) x (file rate / g) taps, g their gcd: a header
    with an odd rate (44101 Hz) would ask for billions, so such rates are refused.
    """
    if rate < MIN_SAMPLE_RATE:
        return f"sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz (a corrupt header? it would make hours of audio)"
    g = math.gcd(rate, codec_rate)
    taps = (rate // g) * (codec_rate // g)
    if taps > MAX_RESAMPLE_TAPS:
        return (f"sample rate {rate} Hz has no small ratio to the codec's {codec_rate} Hz "
                f"(resampling would need a {taps:,}-tap filter)")
    return ""


def resampled_length(samples: int, rate: int, codec_rate: int) -> int:
    """Samples at ``codec_rate`` that ``samples`` at ``rate`` become: ``ceil(samples·new / orig)``."""
    return -(-samples * codec_rate // rate)


class BlockResampler:
    """``torchaudio.functional.resample(x, orig, new)`` fed ``x[C, n]`` a block at a time."""

    def __init__(self, orig: int, new: int) -> None:
        from torchaudio.transforms import Resample

        g = math.gcd(orig, new)
        self.orig, self.new = orig // g, new // g
        self.rates = (orig, new)
        # dtype float32: the kernel torchaudio's functional resample builds for float32 input
        filt = Resample(orig, new, dtype=torch.float32)
        self.kernel, self.width = filt.kernel, int(filt.width)
        self.pending: torch.Tensor | None = None  # input from sample done·orig − width on
        self.done = 0   # output blocks computed so far
        self.seen = 0   # input samples pushed so far
        self.given = 0  # output samples returned so far

    def _blocks(self, count: int) -> torch.Tensor:
        """The next ``count`` output blocks from ``pending``, which then drops their input."""
        assert self.pending is not None
        segment = self.pending[:, : count * self.orig + 2 * self.width]
        rows = segment.expand(2, -1) if segment.shape[0] == 1 else segment  # see the module docstring
        out = torch.nn.functional.conv1d(rows[:, None], self.kernel, stride=self.orig)[: segment.shape[0]]
        self.pending = self.pending[:, count * self.orig:]
        self.done += count
        return out.transpose(1, 2).reshape(segment.shape[0], -1)

    def push(self, x: torch.Tensor) -> torch.Tensor:
        """Resampled samples that ``x`` (the next input, ``[C, n]``) completes; ``[C, 0]`` if none."""
        if self.pending is None:
            self.pending = x.new_zeros(x.shape[0], self.width)  # the whole-file call's left padding
        self.pending = torch.cat([self.pending, x], dim=1)
        self.seen += x.shape[1]
        ready = max(0, (self.seen - self.width) // self.orig - self.done)  # block j needs input < (j+1)·o + w
        out = self._blocks(ready) if ready else self.pending.new_zeros(self.pending.shape[0], 0)
        self.given += out.shape[1]
        return out

    def finish(self) -> torch.Tensor:
        """The rest, after the right padding, cut to ``ceil(N·new / orig)`` samples in all."""
        assert self.pending is not None, "finish() before any input"
        self.pending = torch.nn.functional.pad(self.pending, (0, self.width + self.orig))
        total_blocks = self.seen // self.orig + 1
        out = self._blocks(total_blocks - self.done)
        out = out[:, : resampled_length(self.seen, *self.rates) - self.given]
        self.given += out.shape[1]
        return out


def rechunk(pieces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The concatenation of ``pieces`` (``[C, n]`` each) along time, as ``[C, size]`` pieces and a
    shorter last one: the same pieces whatever sizes came in."""
    held: list[np.ndarray] = []
    count = 0
    for piece in pieces:
        if piece.shape[-1] == 0:
            continue
        held.append(piece)
        count += piece.shape[-1]
        if count < size:
            continue
        joined = np.concatenate(held, axis=-1) if len(held) > 1 else held[0]
        whole = count // size * size
        for start in range(0, whole, size):
            yield joined[..., start:start + size]
        held = [joined[..., whole:]] if count > whole else []
        count -= whole
    if count:
        yield np.concatenate(held, axis=-1) if len(held) > 1 else held[0]


@dataclass(frozen=True)
class AudioSpan:
    """The part of an audio file a document covers, from its header: ``[start, stop)`` in frames."""

    rate: int
    channels: int
    start: int
    stop: int

    @property
    def frames(self) -> int:
        return self.stop - self.start


def open_span(doc: Document, codec_rate: int) -> AudioSpan:
    """The document's span of its file, checked: readable, not empty, a usable sample rate."""
    import soundfile as sf

    if doc.path is None:
        raise TokenizerError(f"{doc.describe()}: acoustic documents must be audio files, not in-memory text")
    try:
        info = sf.info(str(doc.path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise TokenizerError(f"{doc.describe()}: cannot read audio ({_detail(exc, doc)})") from exc
    start, stop = doc.bounds(int(info.frames)) if doc.span else (0, int(info.frames))
    span = AudioSpan(int(info.samplerate), int(info.channels), start, stop)
    if span.frames <= 0:
        raise TokenizerError(f"{doc.describe()}: audio is empty (0 samples)")
    problem = rate_problem(span.rate, codec_rate)
    if problem:
        raise TokenizerError(f"{doc.describe()}: {problem}")
    return span


def _detail(exc: Exception, doc: Document) -> str:
    return str(exc).replace(f"Error opening {str(doc.path)!r}: ", "")  # the file is named once, in front


def read_blocks(doc: Document, span: AudioSpan, frames: int) -> Iterator[np.ndarray]:
    """The span's samples, ``[C, n]`` float32 with ``n <= frames``; a block holding NaN or
    infinity is an error naming the file. Ends early if the file holds fewer frames than its header says."""
    import soundfile as sf

    try:
        with sf.SoundFile(str(doc.path)) as fh:
            if span.start:
                fh.seek(span.start)
            left = span.frames
            while left > 0:
                data = fh.read(min(frames, left), dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                left -= data.shape[0]
                if not np.isfinite(data).all():
                    raise TokenizerError(f"{doc.describe()}: audio holds NaN or infinite samples")
                yield data.T
    except TokenizerError:
        raise
    except Exception as exc:
        raise TokenizerError(f"{doc.describe()}: cannot read audio ({_detail(exc, doc)})") from exc


class CodecAudio:
    """A document's audio for a codec: read ``seconds`` at a time, downmixed (to mono, or to
    stereo from more than two channels) and resampled to ``codec_rate``. Iterating gives
    ``[channels, n]`` float32 blocks whose concatenation is the whole-file result; it can be
    iterated again (a second pass reads the file again). The header is checked on creation."""

    def __init__(self, doc: Document, codec_rate: int, channels: int, seconds: float) -> None:
        self.doc, self.codec_rate, self.channels, self.block_seconds = doc, codec_rate, channels, seconds
        self.span = open_span(doc, codec_rate)
        self.frames_read = 0  # input frames the last full pass read (the header may promise more)

    @property
    def samples(self) -> int:
        """Samples at the codec's rate a full read gives, by the header (a short file gives fewer)."""
        span = self.span
        return (span.frames if span.rate == self.codec_rate
                else resampled_length(span.frames, span.rate, self.codec_rate))

    @property
    def seconds(self) -> float:
        """Length of what was read, in seconds (after a full pass)."""
        return self.frames_read / self.span.rate

    def __iter__(self) -> Iterator[np.ndarray]:
        span = self.span
        resampler = BlockResampler(span.rate, self.codec_rate) if span.rate != self.codec_rate else None
        step = max(1, round(self.block_seconds * span.rate))
        if resampler is not None:
            step = max(1, round(step / resampler.orig)) * resampler.orig  # whole filter strides
        read = 0
        for wave in read_blocks(self.doc, span, step):
            read += wave.shape[1]
            mono = wave.mean(axis=0, keepdims=True) if (self.channels == 1 or wave.shape[0] > 2) else wave
            x = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
            if resampler is not None:
                x = resampler.push(x)
            if x.shape[1]:
                yield self._to_channels(x)
        if read == 0:
            raise TokenizerError(f"{self.doc.describe()}: audio is empty (0 samples)")
        if resampler is not None:
            x = resampler.finish()
            if x.shape[1]:
                yield self._to_channels(x)
        self.frames_read = read

    def _to_channels(self, x: torch.Tensor) -> np.ndarray:
        if self.channels == 2 and x.shape[0] == 1:
            x = x.expand(2, -1)
        return x.contiguous().numpy()


def unit_rms_scale(blocks: Iterable[np.ndarray], segment: int) -> float | None:
    """What to divide by for unit RMS (the whole file's RMS of its channel mean, plus 1e-8), or
    None for a silent file (RMS at most 1e-6): the 48 kHz model's normalisation. Squares are
    summed in float64 per ``segment`` samples counted from the start, so the figure does not
    depend on how the file was read."""
    total, count = 0.0, 0
    for piece in rechunk(blocks, segment):
        mean = piece.mean(axis=0)
        total += float(np.square(mean, dtype=np.float64).sum())
        count += mean.shape[0]
    rms = math.sqrt(total / count) if count else 0.0
    return rms + 1e-8 if rms > 1e-6 else None
