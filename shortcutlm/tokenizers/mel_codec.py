"""The offline acoustic codec: residual k-means over log-mel frames, decoded with Griffin-Lim.

It is **not** the published EnCodec: decodes are phase-reconstructed (Griffin-Lim) and sound
smeared, but they carry the pitch, rhythm and loudness of their tokens, so continuations can be
judged by ear offline. Why this and not a small EnCodec trained here is measured in the acoustic
tokenizer's docstring.

The layout is EnCodec 24 kHz's: 75 frames per second (hop 320 samples) and K residual codebooks
of 1024 entries, K set by the bandwidth as for EnCodec, so ``flatten``/``delay``, the model and
every downstream step are unchanged. Frame t is the STFT window centred on sample 320 t (the
file reflected at its ends), and a wave of N samples has ceil(N / 320) frames, as EnCodec gives.

Encoding: log-mel frame → nearest entry of codebook 0 → its residual → codebook 1, and so on.
Long files stream through (:meth:`MelCodec.encode_blocks`): frames are analysed and quantized in
groups counted from the file's start, so a file's codes do not depend on how it was read and
memory does not grow with its length.
Decoding: the sum of the chosen entries is a log-mel frame; its magnitudes map back to a linear
spectrogram by non-negative least squares through the mel filterbank, and Griffin-Lim
(torchaudio) finds a phase. Both are deterministic given the codebooks.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from shortcutlm.tokenizers.audio_blocks import rechunk
from shortcutlm.tokenizers.kmeans import ROWS_PER_BLOCK, FrameSample, nearest, residual_kmeans

CARD = 1024            # entries per codebook, as EnCodec's
SAMPLE_RATE = 24000
HOP = 320              # samples per frame at 24 kHz: 75 frames per second
N_FFT = 1024
LOG_FLOOR = 1e-3       # mel magnitudes below this count as silence: ~66 dB under a 0.1-amplitude tone
FRAMES_PER_BLOCK = 4500  # one minute of frames analysed or synthesised at a time (bounds memory)
# frames quantized at a time: a whole number of the nearest-entry search's row blocks, so a long
# file's rows meet the same matrix products as a whole-file quantize gives them
QUANTIZE_ROWS = 4 * ROWS_PER_BLOCK
NNLS_STEPS = 30


class MelCodec:
    """K residual codebooks over ``n_mels``-band log-mel frames; ``codebooks`` is ``[K, 1024, n_mels]``."""

    sample_rate = SAMPLE_RATE
    hop_length = HOP
    channels = 1
    frame_rate = SAMPLE_RATE // HOP

    def __init__(self, n_q: int, n_mels: int = 80, griffin_lim_iters: int = 32,
                 codebooks: torch.Tensor | None = None, device: str = "cpu") -> None:
        import torchaudio.functional as AF

        self.n_q = int(n_q)
        self.n_mels = int(n_mels)
        self.griffin_lim_iters = int(griffin_lim_iters)
        if self.n_mels < 8 or self.griffin_lim_iters < 1:
            raise ValueError("mel codec: n_mels must be at least 8 and griffin_lim_iters at least 1")
        self.device = torch.device(device)
        self.window = torch.hann_window(N_FFT, device=self.device)
        # [n_freqs, n_mels]: Slaney-normalised triangles, so a band holds an average magnitude
        self.filterbank = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, self.n_mels, SAMPLE_RATE,
                                             norm="slaney", mel_scale="slaney").to(self.device)
        self.fitted = codebooks is not None
        books = torch.zeros(self.n_q, CARD, self.n_mels) if codebooks is None else codebooks.float()
        if tuple(books.shape) != (self.n_q, CARD, self.n_mels):
            raise ValueError(f"mel codec: codebooks must be [{self.n_q}, {CARD}, {self.n_mels}], "
                             f"not {list(books.shape)}")
        self.codebooks = books.to(self.device)

    # ------------------------------------------------------------------ analysis
    def log_mel(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``wave[1, N]`` (or ``[N]``) at 24 kHz → ``[ceil(N / hop), n_mels]`` log-mel (on the CPU)."""
        blocks = list(self.log_mel_blocks([wave]))
        return torch.cat(blocks) if blocks else torch.zeros(0, self.n_mels)

    def log_mel_blocks(self, pieces: Iterable[np.ndarray | torch.Tensor]) -> Iterator[torch.Tensor]:
        """Log-mel frames of the concatenation of ``pieces`` (``[1, n]`` or ``[n]`` each), a block of
        ``FRAMES_PER_BLOCK`` frames at a time, on the CPU: what :meth:`log_mel` gives for the whole wave.

        The wave is reflected at its ends (centred frames; zero-padded when it has no more samples
        than half a window, as torch.stft does not reflect those) and analysed in blocks of
        frames counted from the file's start, so the blocks, and the numbers, are the same
        however the pieces were cut; at most a block's samples are held.
        """
        half = N_FFT // 2
        head: list[torch.Tensor] = []  # the first samples, until the left reflection has them all
        held: torch.Tensor | None = None  # the reflected wave from frame `done`'s window on
        done = total = 0
        for piece in pieces:
            x = torch.as_tensor(np.asarray(piece, dtype=np.float32)).reshape(-1).to(self.device)
            total += x.shape[0]
            if held is None:
                head.append(x)
                if total <= half:
                    continue
                x = torch.cat(head)
                held = torch.cat([x[1:half + 1].flip(0), x])
            else:
                held = torch.cat([held, x])
            while held.shape[0] >= (FRAMES_PER_BLOCK - 1) * HOP + N_FFT:  # a whole block's windows
                yield self._analyse(held, FRAMES_PER_BLOCK)
                held = held[FRAMES_PER_BLOCK * HOP:]
                done += FRAMES_PER_BLOCK
        frames = -(-total // HOP)
        if held is None:  # no more than half a window of samples
            if total:
                x = torch.cat(head)
                yield self._analyse(torch.nn.functional.pad(x, (half, half)), frames)
            return
        held = torch.cat([held, held[-half - 1:-1].flip(0)])  # the right reflection
        while done < frames:
            count = min(FRAMES_PER_BLOCK, frames - done)
            yield self._analyse(held, count)
            held = held[count * HOP:]
            done += count

    def _analyse(self, padded: torch.Tensor, frames: int) -> torch.Tensor:
        """Log-mel of the first ``frames`` windows of ``padded`` (window f starts at sample f·hop)."""
        piece = padded[: (frames - 1) * HOP + N_FFT]
        spec = torch.stft(piece, N_FFT, HOP, window=self.window, center=False, return_complex=True).abs()
        return (spec.T @ self.filterbank).clamp_min(LOG_FLOOR).log().cpu()

    # ------------------------------------------------------------------ codes
    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """``[T, n_mels]`` log-mel → ``codes[K, T]``, codebook by codebook on the residual."""
        residual = frames.float().to(self.device)
        codes = torch.empty(self.n_q, frames.shape[0], dtype=torch.int64, device=self.device)
        for k in range(self.n_q):
            codes[k] = nearest(residual, self.codebooks[k])
            residual = residual - self.codebooks[k][codes[k]]
        return codes.cpu()

    def dequantize(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``codes[K, T]`` → ``[T, n_mels]`` log-mel, the sum of the chosen entries (on the CPU)."""
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64)).to(self.device)
        out = torch.zeros(codes.shape[1], self.n_mels, device=self.device)
        for k in range(min(self.n_q, codes.shape[0])):
            out += self.codebooks[k][codes[k]]
        return out.cpu()

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """``wave[1, N]`` → ``codes[K, ceil(N / hop)]`` int64."""
        parts = list(self.encode_blocks([wave]))
        return np.concatenate(parts, axis=1) if parts else np.zeros((self.n_q, 0), np.int64)

    def encode_blocks(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Codes ``[K, n]`` (int64) of the concatenation of ``pieces``, in time order, a block at a
        time. Frames are quantized in groups of ``QUANTIZE_ROWS`` counted from the file's start,
        so the codes are the same however the pieces were cut."""
        if not self.fitted:
            raise RuntimeError("acoustic tokenizer: mel_kmeans codebooks are not fitted; call train(documents) first")
        for frames in rechunk((block.numpy().T for block in self.log_mel_blocks(pieces)), QUANTIZE_ROWS):
            yield self.quantize(torch.from_numpy(np.ascontiguousarray(frames.T))).numpy()

    # ------------------------------------------------------------------ synthesis
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``codes[K, T]`` → ``wave[1, T * hop]`` float32."""
        return self.synthesize(self.dequantize(codes))

    def synthesize(self, log_mel: torch.Tensor) -> np.ndarray:
        """``[T, n_mels]`` log-mel → ``wave[1, T * hop]``: filterbank inverse, then Griffin-Lim.

        Synthesised a minute at a time; Griffin-Lim's phase is local, so the joins cost nothing
        audible next to its own smearing.
        """
        parts = [self._synthesize_block(block.to(self.device)) for block in log_mel.split(FRAMES_PER_BLOCK)]
        return torch.cat(parts or [torch.zeros(0)]).cpu()[None].numpy().astype(np.float32)

    def _synthesize_block(self, log_mel: torch.Tensor) -> torch.Tensor:
        import torchaudio.functional as AF

        silent = log_mel <= np.log(LOG_FLOOR) + 1e-3
        mel = torch.where(silent, torch.zeros_like(log_mel), log_mel.exp())
        magnitude = self._linear_magnitude(mel)  # [n_freqs, T]
        frames = magnitude.shape[1]
        # frames sit at 0, hop, ..., (T - 1) hop as the centred analysis made them; one silent
        # frame more lets the inverse STFT cover the last hop
        magnitude = torch.cat([magnitude, torch.zeros_like(magnitude[:, :1])], dim=1)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)  # Griffin-Lim starts from random phases: fixed, so decoding repeats exactly
            return AF.griffinlim(magnitude, self.window, N_FFT, HOP, N_FFT, power=1.0, n_iter=self.griffin_lim_iters,
                                 momentum=0.99, length=frames * HOP, rand_init=True)

    def _linear_magnitude(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel magnitudes ``[T, n_mels]`` → linear ``[n_freqs, T]`` by non-negative least squares.

        A pseudo-inverse rings (its negative bins, clipped, leave holes); projected gradient
        steps from each band spread over its bins keep every bin non-negative and the
        re-analysed mel close to the target.
        """
        fb = self.filterbank  # [F, M]
        spec = (mel @ fb.T) / fb.sum(1).clamp_min(1e-8)  # [T, F]
        step = 1.0 / float(torch.linalg.matrix_norm(fb, ord=2) ** 2)
        for _ in range(NNLS_STEPS):
            spec = (spec - step * ((spec @ fb - mel) @ fb.T)).clamp_min(0.0)
        return spec.T

    # ------------------------------------------------------------------ fitting and state
    def training_sample(self, wave: np.ndarray) -> np.ndarray:
        """What the codebooks are fitted on: the file's log-mel frames ``[frames, n_mels]``."""
        return self.log_mel(wave).numpy()

    def feature_blocks(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """:meth:`training_sample` a block at a time: ``[n, n_mels]`` float32 log-mel frames."""
        for block in self.log_mel_blocks(pieces):
            yield block.numpy()

    def fit(self, samples: Sequence[np.ndarray | FrameSample], seed: int, iters: int, max_frames: int) -> int:
        """Fit the codebooks on log-mel frames (:meth:`log_mel` of the train files); returns frames used."""
        books, used = residual_kmeans(samples, self.n_q, CARD, iters, seed, max_frames)
        self.codebooks = books.to(self.device)
        self.fitted = True
        return used

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"codebooks": self.codebooks.detach().cpu().clone()}

    @staticmethod
    def holds_codebooks(state: dict) -> bool:
        """Whether a loaded ``codec.pt`` is this codec's (EnCodec's state dicts hold many tensors)."""
        return set(state) == {"codebooks"}
