"""EnCodec as the acoustic tokenizer's codec: published, local or random-init weights.

Audio is encoded in chunks of ``chunk_seconds`` (5 s, a whole number of hops): each chunk is
encoded as if it were a file of its own, one chunk at a time, so a long file streams through
(:meth:`EncodecCodec.encode_blocks`) and memory holds one chunk's activations whatever the
file's length. Short chunks keep every activation under glibc's mmap threshold: with 30 s
chunks a third of the encode time went to the kernel zeroing fresh pages. Chunks are not
batched: a batch row's latents differ from the same chunk's alone by up to 4e-8 (torch 2.11,
one thread), which would make a chunk's codes depend on how many others its file has, and
one chunk at a time was also the fastest (12 chunks: 3.7 s one by one, 4.8 s as one batch).
Chunking is part of the mapping and of the fingerprint.

For CPU speed the codec's ELUs are computed through ``exp`` rather than torch's scalar
``expm1`` (``fast_elu``, see :class:`FastELU`) and its LSTM runs on one thread.

The 48 kHz model is stereo and was trained on loudness-normalised 1 s segments whose scale
travels beside the codes. Token ids cannot carry that scale, so the tokenizer normalises the
whole file to unit RMS before encoding and decoded audio is written at -20 dBFS RMS.
"""
from __future__ import annotations

import contextlib
import sys
import types
import warnings
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from shortcutlm.core.errors import UserError
from shortcutlm.tokenizers.audio_blocks import rechunk
from shortcutlm.tokenizers.encodec_fast import FastELU, one_thread_enter, one_thread_exit, sconv1d_forward
from shortcutlm.tokenizers.kmeans import FrameSample, residual_kmeans

CARD = 1024
BANDWIDTHS = {24000: (1.5, 3.0, 6.0, 12.0, 24.0), 48000: (3.0, 6.0, 12.0, 24.0)}
PRETRAINED_NAMES = {24000: "encodec_24khz", 48000: "encodec_48khz"}
#: The published weights files encodec downloads (a copy fetched by hand is passed as ``weights``).
PUBLISHED_FILES = {24000: "encodec_24khz-d7cc33bc.th", 48000: "encodec_48khz-7e698e3e.th"}
EMA_BUFFERS = ("embed_avg", "cluster_size")
DECODE_CONTEXT_S = 1.0  # decoder warm-up / look-ahead around each decoded chunk
DECODE_RMS_48K = 0.1  # -20 dBFS: the level 48 kHz decodes are written at (the scale is not in the ids)
FRAME_RATES = {24000: 75, 48000: 150}
BITS_PER_CODE = 10  # log2 of the 1024 entries of a codebook


class CodecUnavailable(UserError, RuntimeError):
    """The pretrained EnCodec weights cannot be had here (no network): one line naming both ways out."""


class EncodecCodec:
    """One EnCodec model at a bandwidth; ``weights`` is ``pretrained``, ``random_kmeans`` or a weights file,
    whose contents come in ``state_dict`` (:func:`read_state_dict`)."""

    def __init__(self, sample_rate: int, bandwidth: float, weights: str, *, state_dict: dict | None = None,
                 seed: int = 0, fast_elu: bool = True, chunk_seconds: float = 5.0, source: str | None = None,
                 device: str = "cpu") -> None:
        self.sample_rate = sample_rate
        self.chunk_seconds = chunk_seconds
        self.device = torch.device(device)
        self.model = _build_model(sample_rate, weights, state_dict, seed, fast_elu, source or weights)
        self.model.set_target_bandwidth(bandwidth)
        self.bandwidth = bandwidth
        self.frame_rate = int(self.model.frame_rate)
        self.channels = int(self.model.channels)
        self.n_q = self.model.quantizer.get_num_quantizers_for_bandwidth(self.model.frame_rate, bandwidth)
        self.hop_length = int(np.prod(self.model.encoder.ratios))
        self.model.to(self.device)
        self.fitted = weights != "random_kmeans" or self._codebooks_fitted()

    @staticmethod
    def codebooks_for(sample_rate: int, bandwidth: float) -> int:
        """K for a bandwidth, as EnCodec counts it: kbps / (10 bits x frames per second)."""
        return int(round(bandwidth * 1000 / (BITS_PER_CODE * FRAME_RATES[sample_rate])))

    def _codebooks_fitted(self) -> bool:
        layers = self.model.quantizer.vq.layers[: self.n_q]
        return all(bool(layer._codebook.inited.item()) and float(layer._codebook.embed.abs().sum()) > 0
                   for layer in layers)

    @property
    def chunk_samples(self) -> int:
        hops = max(1, round(self.chunk_seconds * self.sample_rate / self.hop_length))
        return hops * self.hop_length

    def _chunks(self, pieces: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """The concatenation of ``pieces`` (``[C, n]`` each) as ``[1, C, chunk]`` tensors on the device,
        the last one shorter: the same chunks however the pieces were cut."""
        for chunk in rechunk(pieces, self.chunk_samples):
            yield torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))[None].to(self.device)

    def feature_blocks(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The encoder's output ``[frames, D]`` float32, a chunk at a time."""
        for chunk in self._chunks(pieces):
            yield self.model.encoder(chunk)[0].T.cpu().numpy().astype(np.float32)

    def latents(self, wave: np.ndarray) -> np.ndarray:
        """The encoder's output for ``wave[C, N]``, ``[frames, D]`` float32, chunk by chunk as encoding goes."""
        parts = list(self.feature_blocks([wave]))
        return np.concatenate(parts) if parts else np.zeros((0, self.model.encoder.dimension), np.float32)

    def encode_blocks(self, pieces: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Codes ``[K, n]`` (int64) of the concatenation of ``pieces``, a chunk at a time, in time order."""
        if not self.fitted:
            raise RuntimeError("acoustic tokenizer: random_kmeans codebooks are not fitted; "
                               "call train(documents) first")
        for chunk in self._chunks(pieces):
            codes = self.model.quantizer.encode(self.model.encoder(chunk), self.model.frame_rate, self.bandwidth)
            yield codes[:, 0].cpu().numpy().astype(np.int64)  # [K, 1, T] -> [K, T]

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """``wave[C, N]`` → ``codes[K, ceil(N / hop)]`` int64."""
        parts = list(self.encode_blocks([wave]))
        return np.concatenate(parts, axis=1) if parts else np.zeros((self.n_q, 0), np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``codes[K, T]`` → ``wave[C, T * hop]`` float32 (decoder output trimmed to whole frames).

        Decoded chunk by chunk, each with ``DECODE_CONTEXT_S`` of neighbouring frames run through
        the decoder and cut away again (left only for the causal 24 kHz model), so chunk joins do
        not click.
        """
        codes = np.asarray(codes, dtype=np.int64)
        frames, chunk = codes.shape[1], self.chunk_samples // self.hop_length
        context = round(DECODE_CONTEXT_S * self.frame_rate)
        right = 0 if self.sample_rate == 24000 else context
        parts = []
        for start in range(0, frames, chunk):
            lo, hi = max(0, start - context), min(frames, start + chunk + right)
            emb = self.model.quantizer.decode(torch.from_numpy(codes[:, None, lo:hi]).to(self.device))
            wave = self.model.decoder(emb)[0]
            keep = slice((start - lo) * self.hop_length, (min(frames, start + chunk) - lo) * self.hop_length)
            parts.append(wave[:, keep].cpu().numpy())
        if not parts:
            return np.zeros((self.channels, 0), np.float32)
        wave = np.concatenate(parts, axis=1)
        if self.sample_rate == 48000:
            wave = wave * DECODE_RMS_48K
        return wave.astype(np.float32)

    def training_sample(self, wave: np.ndarray) -> np.ndarray:
        return self.latents(wave)

    def fit(self, samples: Sequence[np.ndarray | FrameSample], seed: int, iters: int, max_frames: int) -> int:
        """Each residual-VQ codebook by k-means on the train files' latents, residual by residual."""
        books, used = residual_kmeans(samples, self.n_q, CARD, iters, seed, max_frames)
        with torch.no_grad():
            for layer, book in zip(self.model.quantizer.vq.layers[: self.n_q], books):
                codebook = layer._codebook
                codebook.embed.copy_(book)
                codebook.embed_avg.copy_(book)
                codebook.cluster_size.fill_(1.0)
                codebook.inited.fill_(1.0)
        self.fitted = True
        return used

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict minus the VQ's training-only EMA statistics (``embed_avg``, ``cluster_size``):
        they never touch encode or decode, and leaving them out makes ``codec.pt`` a third smaller."""
        return {name: t.detach().cpu() for name, t in self.model.state_dict().items() if not name.endswith(EMA_BUFFERS)}


def _build_model(sample_rate: int, weights: str, state_dict: dict | None, seed: int, fast_elu: bool, source: str):
    from encodec import EncodecModel

    factory = EncodecModel.encodec_model_24khz if sample_rate == 24000 else EncodecModel.encodec_model_48khz
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*")
        if state_dict is None and weights == "pretrained":
            try:
                with contextlib.redirect_stdout(sys.stderr):  # torch.hub reports downloads on stdout
                    model = factory(pretrained=True)
            except Exception as exc:  # urllib / hash / unpickling errors alike
                raise CodecUnavailable(
                    f"acoustic tokenizer: could not download the pretrained {PRETRAINED_NAMES[sample_rate]} weights "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); two ways out: the offline codec "
                    "(tokenizer setting weights=mel_kmeans; in a recipe --set tokenizer.weights=mel_kmeans) or a "
                    f"local weights file (weights=/path/to/{PUBLISHED_FILES[sample_rate]}, fetched by hand from "
                    "dl.fbaipublicfiles.com/encodec/v0/)") from exc
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = factory(pretrained=False)
            if state_dict is not None:  # a weights file's state dict (the tokenizer reads the file)
                _load_inference_state(model, state_dict, source, sample_rate)
    if sample_rate == 48000:
        # Whole-file RMS normalisation instead of per-segment scales (see module docstring).
        model.segment = None
        model.normalize = False
    for module in list(model.modules()):
        if type(module).__name__ == "SConv1d":
            module.forward = types.MethodType(sconv1d_forward, module)
        if type(module).__name__ == "SLSTM":
            module.register_forward_pre_hook(one_thread_enter)
            module.register_forward_hook(one_thread_exit)
        for name, child in module.named_children():
            if fast_elu and isinstance(child, torch.nn.ELU) and child.alpha == 1.0:
                setattr(module, name, FastELU())
    model.eval()
    return model


def read_state_dict(path: Path) -> dict:
    """A weights file's state dict; a missing or unreadable file is a one-line error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"acoustic tokenizer: weights file {path} does not exist "
                                "(weights must be 'pretrained', 'mel_kmeans', 'random_kmeans' or a state-dict path)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"acoustic tokenizer: cannot read weights file {path}: {exc}") from exc


def _load_inference_state(model, state_dict: dict, source: str, sample_rate: int) -> None:
    """Load a full or an inference-only state dict (EMA buffers absent: ``embed_avg`` := ``embed``)."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    bad = [name for name in missing if not name.endswith(EMA_BUFFERS)] + list(unexpected)
    if bad:
        raise RuntimeError(f"acoustic tokenizer: weights from {source} do not fit EnCodec {sample_rate // 1000} kHz "
                           f"(missing or unexpected: {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''})")
    for name in missing:
        if name.endswith("embed_avg"):
            book = model.get_submodule(name.rsplit(".", 1)[0])
            book.embed_avg.copy_(book.embed)
