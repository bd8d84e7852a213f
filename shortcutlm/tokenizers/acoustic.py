"""Acoustic tokens: EnCodec codes laid out as token ids (``flatten`` or ``delay``, see codebooks.py).

Audio of any sample rate / channel count is read with ``soundfile`` (torchaudio's loaders need
torchcodec, which is absent), downmixed, resampled with ``torchaudio.functional.resample`` and
encoded with EnCodec at a chosen bandwidth (K codebooks). Weights, setting ``weights``:

* ``pretrained``: encodec's own download of the published model (needs a network once; then
  torch.hub's cache);
* a path to a state dict (e.g. the published ``encodec_24khz-d7cc33bc.th`` fetched by hand, or a
  ``codec.pt`` written by :meth:`AcousticTokenizer.save`);
* ``random_kmeans``: random init under ``torch.manual_seed(seed)``, then each residual-VQ
  codebook fitted by k-means on the encoder's latents of the training audio, residual by
  residual (:meth:`AcousticTokenizer.train`). For runs with no network: the codes mean
  something (they cluster real latents) but the decoded audio is not speech-quality. Logged
  and recorded in the saved config.

Audio is encoded in chunks of ``chunk_seconds`` (5 s, a whole number of hops): each chunk is
encoded as if it were a file of its own. Short chunks keep every activation under glibc's
mmap threshold: with 30 s chunks a third of the encode time went to the kernel zeroing fresh
pages. The codec runs on a fixed number of torch threads (``threads``, default 1) because the
ids depend on it: torch's convolutions round differently with 1 and 2 threads, which moved 2-9%
of the codes of the random-init codec (whose latents barely vary). One thread also avoids
OpenMP's spin-waits on a busy machine (2 threads on 2 shared cores encoded 3-10x slower);
throughput comes from encoding files in parallel processes. Chunking and threads are part
of the mapping and of the fingerprint.

For CPU speed the codec's ELUs are computed through ``exp`` rather than torch's scalar
``expm1`` (``fast_elu``, on by default; see :class:`FastELU`) and its LSTM runs on one thread.

The 48 kHz model is stereo and was trained on loudness-normalised 1 s segments whose scale
travels beside the codes. Token ids cannot carry that scale, so here the whole file is
normalised to unit RMS before encoding and decoded audio is written at -20 dBFS RMS.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from shortcutlm.artifacts.files import write_with
from shortcutlm.documents import Document
from shortcutlm.environment import check_torch_pair
from shortcutlm.tokenizers.codebooks import (CARD, LAYOUTS, build_delay, build_flatten, delay_valid_mask,
                                             revert_delay, revert_flatten)
from shortcutlm.tokenizers.base import (Encoded, LossGroups, Tokenizer, TokenizerError, TrainingError, TrainRate,
                                        saved_file, write_config)
from shortcutlm.tokenizers.encodec_fast import FastELU, one_thread_enter, one_thread_exit, sconv1d_forward
from shortcutlm.tokenizers.settings import merge_settings

log = logging.getLogger(__name__)
_WARNED_RANDOM: set[tuple[int, bool]] = set()

CODEC_FILE = "codec.pt"
BANDWIDTHS = {24000: (1.5, 3.0, 6.0, 12.0, 24.0), 48000: (3.0, 6.0, 12.0, 24.0)}
PRETRAINED_NAMES = {24000: "encodec_24khz", 48000: "encodec_48khz"}
_EMA_BUFFERS = ("embed_avg", "cluster_size")
DECODE_CONTEXT_S = 1.0  # decoder warm-up / look-ahead around each decoded chunk
MIN_SAMPLE_RATE = 1000  # a header claiming 1 Hz turns 0.3 s of samples into hours at the codec's rate
MAX_RESAMPLE_TAPS = 1 << 22  # a 16 MB filter; 11025, 22050, 44100, 8000, 16000, 32000, 96000 Hz need < 50k
DECODE_RMS_48K = 0.1  # -20 dBFS: the level 48 kHz decodes are written at (the scale is not in the ids)

DEFAULTS: dict[str, Any] = {
    "sample_rate": 24000,      # which EnCodec: 24000 (mono, causal) or 48000 (stereo)
    "bandwidth": 6.0,          # kbps; K = bandwidth / (10 bits * frame rate / 1000)
    "layout": "flatten",       # flatten | delay
    "weights": "pretrained",   # pretrained | random_kmeans | path to a state dict
    "seed": 0,                 # random_kmeans: init seed and k-means seed
    "kmeans_iters": 20,        # random_kmeans: MiniBatchKMeans max_iter per codebook
    "kmeans_max_frames": 50000,  # random_kmeans: latent frames sampled for fitting
    "chunk_seconds": 5.0,      # encode/decode in chunks of this length (see module docstring)
    "fast_elu": True,          # ELU as max(x, exp(min(x, 0)) - 1): see FastELU
    "threads": 1,              # torch threads the codec runs on (ids depend on it; see module docstring)
}


class AcousticTokenizer(Tokenizer):
    """EnCodec codes as ids; ``n_streams`` is 1 for ``flatten`` and K for ``delay``."""

    domain = "acoustic"
    extensions = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
    artifact_suffixes = (".wav",)
    saved_files = "the codec weights"

    def __init__(self, settings: dict[str, Any] | None = None, *, state_dict: dict | None = None,
                 weights_source: str | None = None) -> None:
        s = merge_settings(self.domain, DEFAULTS, settings)
        self.sample_rate = int(s["sample_rate"])
        if self.sample_rate not in BANDWIDTHS:
            raise ValueError(f"acoustic tokenizer: sample_rate must be 24000 or 48000, not {s['sample_rate']}")
        self.bandwidth = float(s["bandwidth"])
        if self.bandwidth not in BANDWIDTHS[self.sample_rate]:
            raise ValueError(f"acoustic tokenizer: bandwidth {s['bandwidth']} kbps is not one EnCodec "
                             f"{self.sample_rate // 1000} kHz offers: {BANDWIDTHS[self.sample_rate]}")
        self.layout = str(s["layout"])
        if self.layout not in LAYOUTS:
            raise ValueError(f"acoustic tokenizer: layout must be one of {LAYOUTS}, not {self.layout!r}")
        self.seed = int(s["seed"])
        self.kmeans_iters = int(s["kmeans_iters"])
        self.kmeans_max_frames = int(s["kmeans_max_frames"])
        self.chunk_seconds = float(s["chunk_seconds"])
        self.fast_elu = bool(s["fast_elu"])
        self.threads = int(s["threads"])
        if self.threads < 1:
            raise ValueError("acoustic tokenizer: threads must be at least 1")
        if self.chunk_seconds <= 0:
            raise ValueError("acoustic tokenizer: chunk_seconds must be positive")
        weights = str(s["weights"])
        if weights in ("pretrained", "random_kmeans"):
            self.weights_kind = weights
        else:
            self.weights_kind = "checkpoint"
        self.weights_source = weights_source or weights
        self._digest: str | None = None
        self._model = self._build_model(weights, state_dict)
        self._model.set_target_bandwidth(self.bandwidth)
        self.n_q = self._model.quantizer.get_num_quantizers_for_bandwidth(self._model.frame_rate, self.bandwidth)
        self.hop_length = int(np.prod(self._model.encoder.ratios))
        self._fitted = self.weights_kind != "random_kmeans" or self._codebooks_fitted()
        if self.weights_kind == "random_kmeans" and (self.seed, self._fitted) not in _WARNED_RANDOM:
            _WARNED_RANDOM.add((self.seed, self._fitted))  # once per process: a grid loads it per run
            log.warning("acoustic tokenizer: EnCodec with RANDOM-INIT weights (seed %d) and k-means codebooks%s; "
                        "codes cluster real latents but decoded audio is not the published codec's quality",
                        self.seed, "" if self._fitted else " (not fitted yet: call train())")

    # ------------------------------------------------------------------ construction
    def _build_model(self, weights: str, state_dict: dict | None):
        # encodec imports torchaudio: a torch/torchaudio pair that does not load together fails
        # here in one line naming the fix, not with an undefined symbol deep in the import.
        check_torch_pair()
        from encodec import EncodecModel

        factory = (EncodecModel.encodec_model_24khz if self.sample_rate == 24000
                   else EncodecModel.encodec_model_48khz)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight_norm.*")
            if state_dict is None and weights == "pretrained":
                try:
                    with contextlib.redirect_stdout(sys.stderr):  # torch.hub reports downloads on stdout
                        model = factory(pretrained=True)
                except Exception as exc:  # urllib / hash / unpickling errors alike
                    raise RuntimeError(
                        f"acoustic tokenizer: could not get the pretrained {PRETRAINED_NAMES[self.sample_rate]} "
                        f"weights ({type(exc).__name__}: {exc}). encodec downloads them from "
                        "dl.fbaipublicfiles.com into torch.hub's cache; without a network, put the .th file "
                        "there, pass its path as `weights`, or use `weights: random_kmeans`.") from exc
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    model = factory(pretrained=False)
                if state_dict is None and self.weights_kind == "checkpoint":
                    path = Path(weights).expanduser()
                    if not path.is_file():
                        raise FileNotFoundError(f"acoustic tokenizer: weights file {path} does not exist "
                                                "(weights must be 'pretrained', 'random_kmeans' or a state-dict path)")
                    try:
                        state_dict = torch.load(path, map_location="cpu", weights_only=True)
                    except Exception as exc:
                        raise RuntimeError(f"acoustic tokenizer: cannot read weights file {path}: {exc}") from exc
                if state_dict is not None:
                    _load_inference_state(model, state_dict, self.weights_source, self.sample_rate)
        if self.sample_rate == 48000:
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
                if self.fast_elu and isinstance(child, torch.nn.ELU) and child.alpha == 1.0:
                    setattr(module, name, FastELU())
        model.eval()
        return model

    def _codebooks_fitted(self) -> bool:
        layers = self._model.quantizer.vq.layers[: self.n_q]
        return all(bool(layer._codebook.inited.item()) and float(layer._codebook.embed.abs().sum()) > 0
                   for layer in layers)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "AcousticTokenizer":
        return cls(settings)

    # ------------------------------------------------------------------ protocol: sizes and ids
    @property
    def frames_per_second(self) -> int:
        """EnCodec frames per second (75 at 24 kHz, 150 at 48 kHz)."""
        return int(self._model.frame_rate)

    @property
    def tokens_per_second(self) -> int:
        """Sequence positions per second: K*frames for ``flatten``, frames for ``delay`` (K ids per step)."""
        return self.frames_per_second * (self.n_q if self.layout == "flatten" else 1)

    @property
    def n_codebooks(self) -> int:
        return self.n_q

    @property
    def n_streams(self) -> int:
        return self.n_q if self.layout == "delay" else 1

    @property
    def _n_codes(self) -> int:
        return self.n_q * CARD if self.layout == "flatten" else CARD

    @property
    def special_ids(self) -> dict[str, int]:
        base = self._n_codes
        ids = {"pad": base, "bos": base + 1, "eos": base + 2}
        if self.layout == "delay":
            ids["empty"] = base + 3
        return ids

    @property
    def vocab_size(self) -> int:
        return self._n_codes + len(self.special_ids)

    def token_families(self) -> dict[str, np.ndarray]:
        """``flatten``: one family per codebook ("codebook_0", ...) plus "special". ``delay``: none —
        every stream shares the ids, and per-codebook loss comes from the stream index instead."""
        if self.layout != "flatten":
            return {}
        card = CARD
        families = {f"codebook_{k}": np.arange(k * card, (k + 1) * card) for k in range(self.n_q)}
        families["special"] = np.array(sorted(self.special_ids.values()))
        return families

    def valid_mask(self, n_frames: int) -> np.ndarray:
        """Where real codes sit in the token array of ``n_frames`` frames (the loss mask)."""
        if self.layout == "delay":
            return delay_valid_mask(self.n_q, n_frames)
        return np.ones(n_frames * self.n_q, dtype=bool)

    def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """``codes[K, T]`` -> this layout's token array."""
        if self.layout == "delay":
            return build_delay(codes, self.special_ids["empty"])
        return build_flatten(codes)

    def tokens_to_codes(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token array -> ``(codes[K, T], valid[K, T])``; specials and misplaced ids become invalid code 0."""
        if self.layout == "delay":
            return revert_delay(tokens)
        return revert_flatten(tokens, self.n_q)

    @property
    def needs_training(self) -> bool:
        return not self._fitted

    # ------------------------------------------------------------------ protocol: generation and loss
    def steps_for_seconds(self, seconds: float, train_rate: TrainRate) -> tuple[int, dict[str, Any]]:
        """Whole frames for ``seconds``: K ids per frame for ``flatten``; one step per frame for
        ``delay``, plus K-1 steps so that every (lagging) stream completes the last frame."""
        frames = max(1, round(seconds * self.frames_per_second))
        steps = frames + self.n_q - 1 if self.layout == "delay" else frames * self.n_q
        return steps, {"frames_requested": frames, "tokens_per_second": self.tokens_per_second}

    def prompt_steps(self, tokens: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``delay``: the prompt's codes ``[K, F]`` delayed and cut after step F, where stream 0 has
        all F frames but stream k only F-k. The missing known frames of the lagging streams come
        back as ``forced`` ``[K, K-1]``: during the first K-1 generated steps stream k reproduces
        the prompt's frames F-k .. F-1 instead of sampling them. Without a prompt the forced ids
        are ``empty``, as in the corners of training data. ``flatten``: the ids as they are."""
        if self.layout != "delay":
            return super().prompt_steps(tokens)
        k = self.n_q
        if tokens is None:
            codes = np.zeros((k, 0), dtype=np.int64)
        else:
            codes, _ = self.tokens_to_codes(np.asarray(tokens, dtype=np.int64))  # [K, F]
        frames = codes.shape[1]
        steps = self.codes_to_tokens(codes)[:, :frames] if frames else np.zeros((k, 0), dtype=np.int64)
        forced = np.full((k, k - 1), -1, dtype=np.int64)
        for stream in range(1, k):
            for j in range(stream):  # generated step F+j holds frame F+j-stream of this stream
                frame = frames + j - stream
                forced[stream, j] = codes[stream, frame] if frame >= 0 else self.special_ids["empty"]
        return steps, forced

    def banned_ids(self, stop_at_eos: bool) -> tuple[int, ...]:
        """Every special id: an EOS would cut the waveform short, and the others carry no sound."""
        return tuple(self.special_ids.values())

    def stop_ids(self, stop_at_eos: bool) -> tuple[int, ...]:
        """None: audio lasts what was asked for (EOS is never sampled)."""
        return ()

    def loss_groups(self) -> LossGroups:
        """Per codebook: ``delay`` by stream (stream k is codebook k), ``flatten`` by the target id's
        codebook (:meth:`token_families`, EOS under ``special``)."""
        if self.layout == "delay":
            return LossGroups("codebook", by_stream=tuple(f"codebook_{k}" for k in range(self.n_q)))
        return LossGroups("codebook", self.token_families())

    def artifact_seconds(self, path: str | Path) -> float | None:
        import soundfile as sf

        return float(sf.info(str(path)).duration)

    artifact_is_sound = True

    @classmethod
    def picture(cls, artifact: str | Path, out_png: str | Path, prompt_seconds: float | None = None,
                title: str = "") -> Path | None:
        """A spectrogram of the ``.wav``, the end of the prompt marked."""
        import soundfile as sf

        from shortcutlm.sample_pictures import plot_spectrogram

        wave, rate = sf.read(str(artifact), dtype="float32", always_2d=False)
        return plot_spectrogram(wave, int(rate), Path(out_png), prompt_seconds, title)

    def describe(self) -> dict[str, Any]:
        return {"layout": self.layout, "n_codebooks": self.n_q, "frames_per_second": self.frames_per_second}

    # ------------------------------------------------------------------ audio in
    def read_audio(self, doc: Document) -> tuple[np.ndarray, float]:
        """Read, downmix and resample one file to the codec's rate: ``(wave[C, N] float32, seconds)``."""
        import soundfile as sf

        if doc.path is None:
            raise TokenizerError(f"{doc.describe()}: acoustic documents must be audio files, not in-memory text")
        try:
            start, stop = doc.bounds(sf.info(str(doc.path)).frames) if doc.span else (0, None)
            data, rate = sf.read(str(doc.path), start=start, stop=stop, dtype="float32", always_2d=True)
        except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError
            detail = str(exc).replace(f"Error opening {str(doc.path)!r}: ", "")  # the file is named once, in front
            raise TokenizerError(f"{doc.describe()}: cannot read audio ({detail})") from exc
        if data.shape[0] == 0:
            raise TokenizerError(f"{doc.describe()}: audio is empty (0 samples)")
        problem = self._rate_problem(int(rate))
        if problem:
            raise TokenizerError(f"{doc.describe()}: {problem}")
        if not np.isfinite(data).all():
            raise TokenizerError(f"{doc.describe()}: audio holds NaN or infinite samples")
        seconds = data.shape[0] / rate
        return self._prepare_wave(data.T, rate), seconds

    def _rate_problem(self, rate: int) -> str:
        """Why a file's sample rate cannot be resampled to the codec's, or "".

        The resampling filter has (codec rate / g) x (file rate / g) taps, g their gcd: a
        header with an odd rate (44101 Hz) would ask for billions, so such rates are refused.
        """
        if rate < MIN_SAMPLE_RATE:
            return f"sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz (a corrupt header? it would make hours of audio)"
        g = math.gcd(rate, self.sample_rate)
        taps = (rate // g) * (self.sample_rate // g)
        if taps > MAX_RESAMPLE_TAPS:
            return (f"sample rate {rate} Hz has no small ratio to the codec's {self.sample_rate} Hz "
                    f"(resampling would need a {taps:,}-tap filter)")
        return ""

    def _prepare_wave(self, wave: np.ndarray, rate: int) -> np.ndarray:
        import torchaudio.functional as AF

        channels = self._model.channels
        mono = wave.mean(axis=0, keepdims=True) if (channels == 1 or wave.shape[0] > 2) else wave
        x = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
        if rate != self.sample_rate:
            x = AF.resample(x, int(rate), self.sample_rate)
        if channels == 2 and x.shape[0] == 1:
            x = x.expand(2, -1)
        if self.sample_rate == 48000:
            rms = float(x.mean(0).pow(2).mean().sqrt())
            x = x / (rms + 1e-8) if rms > 1e-6 else x
        return x.contiguous().numpy()

    # ------------------------------------------------------------------ codec
    @property
    def _chunk_samples(self) -> int:
        hops = max(1, round(self.chunk_seconds * self.sample_rate / self.hop_length))
        return hops * self.hop_length

    @contextlib.contextmanager
    def _codec_threads(self):
        """Run the codec on ``threads`` torch threads, restoring the caller's count afterwards."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(before)

    def encode_wave(self, wave: np.ndarray) -> np.ndarray:
        """``wave[C, N]`` at the codec's rate -> ``codes[K, ceil(N / hop)]`` (int64), chunk by chunk."""
        if not self._fitted:
            raise RuntimeError("acoustic tokenizer: random_kmeans codebooks are not fitted; call train(documents) first")
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        parts = []
        with self._codec_threads():
            for start in range(0, x.shape[-1], self._chunk_samples):
                chunk = x[None, :, start:start + self._chunk_samples]
                codes = self._model.quantizer.encode(self._model.encoder(chunk), self._model.frame_rate,
                                                     self.bandwidth)  # [K, 1, T]
                parts.append(codes[:, 0].numpy())
        return np.concatenate(parts, axis=1).astype(np.int64)

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """``codes[K, T]`` -> ``wave[C, T * hop]`` float32 (decoder output trimmed to whole frames).

        Decoded chunk by chunk, each with ``DECODE_CONTEXT_S`` of neighbouring frames run through
        the decoder and cut away again (left only for the causal 24 kHz model), so chunk joins do
        not click.
        """
        codes = np.asarray(codes, dtype=np.int64)
        frames, chunk = codes.shape[1], self._chunk_samples // self.hop_length
        context = round(DECODE_CONTEXT_S * self.frames_per_second)
        right = 0 if self.sample_rate == 24000 else context
        parts = []
        with self._codec_threads():
            for start in range(0, frames, chunk):
                lo, hi = max(0, start - context), min(frames, start + chunk + right)
                emb = self._model.quantizer.decode(torch.from_numpy(codes[:, None, lo:hi]))  # [1, D, hi - lo]
                wave = self._model.decoder(emb)[0]
                keep = slice((start - lo) * self.hop_length, (min(frames, start + chunk) - lo) * self.hop_length)
                parts.append(wave[:, keep].numpy())
        if not parts:
            return np.zeros((self._model.channels, 0), np.float32)
        wave = np.concatenate(parts, axis=1)
        if self.sample_rate == 48000:
            wave = wave * DECODE_RMS_48K
        return wave.astype(np.float32)

    # ------------------------------------------------------------------ protocol: encode / decode
    def encode_document(self, doc: Document) -> Encoded:
        wave, seconds = self.read_audio(doc)
        codes = self.encode_wave(wave)
        return Encoded(self.codes_to_tokens(codes), {"seconds": seconds, "frames": int(codes.shape[1])})

    def _strip_specials(self, tokens: np.ndarray) -> np.ndarray:
        """Cut at the first EOS and drop PAD/BOS positions (whole steps for ``delay``)."""
        sp = self.special_ids
        if self.layout == "delay":
            tokens = np.asarray(tokens, dtype=np.int64)
            if tokens.ndim != 2 or tokens.shape[0] != self.n_q:
                raise ValueError(f"delay tokens must be [{self.n_q}, S], got shape {tokens.shape}")
            eos = np.nonzero((tokens == sp["eos"]).any(axis=0))[0]
            if eos.size:
                tokens = tokens[:, : eos[0]]
            keep = ~np.isin(tokens, [sp["pad"], sp["bos"]]).all(axis=0)
            return tokens[:, keep]
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        eos = np.nonzero(tokens == sp["eos"])[0]
        if eos.size:
            tokens = tokens[: eos[0]]
        return tokens[~np.isin(tokens, [sp["pad"], sp["bos"]])]

    def decode(self, tokens: np.ndarray, out_path: str | Path, context: dict[str, Any] | None = None) -> Path:
        """Ids -> codes -> ``.wav`` (16-bit PCM). Invalid positions of generated ids become code 0, with a warning."""
        import soundfile as sf

        codes, valid = self.tokens_to_codes(self._strip_specials(tokens))
        if valid.size and not valid.all():
            log.warning("acoustic decode: %d of %d code positions held no valid code (used code 0)",
                        int((~valid).sum()), valid.size)
        wave = self.decode_codes(codes)
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out_path), np.clip(wave.T, -1.0, 1.0), self.sample_rate, subtype="PCM_16")
        return out_path

    # ------------------------------------------------------------------ training (random_kmeans)
    trains_on_samples = True

    def train(self, documents: Iterable[Document]) -> dict[str, str]:
        """Fit each residual codebook by k-means on encoder latents (``weights: random_kmeans`` only;
        pretrained and checkpoint weights need nothing). Unreadable files are skipped and returned."""
        if self.weights_kind != "random_kmeans":
            return {}
        return super().train(documents)

    def training_sample(self, doc: Document) -> np.ndarray:
        """The encoder's latents of one file, ``[frames, D]`` float32, chunk by chunk as encoding goes."""
        wave, _ = self.read_audio(doc)
        x = torch.from_numpy(wave)
        latents = []
        with self._codec_threads():
            for start in range(0, x.shape[-1], self._chunk_samples):
                emb = self._model.encoder(x[None, :, start:start + self._chunk_samples])  # [1, D, T]
                latents.append(emb[0].T.numpy())
        return np.concatenate(latents).astype(np.float32)

    def fit(self, samples: Sequence[np.ndarray]) -> None:
        """k-means per residual codebook on the latents of the train files, residual by residual.

        Uses sklearn's MiniBatchKMeans; with fewer latent frames than 1024 the spare codes
        repeat fitted centroids (never chosen, since ties go to the first index).
        """
        if self.weights_kind != "random_kmeans":
            return
        from sklearn.cluster import MiniBatchKMeans

        if not samples:
            raise TrainingError("acoustic tokenizer: no readable train audio to fit the codebooks on")
        frames = np.concatenate(list(samples)).astype(np.float32)
        rng = np.random.default_rng(self.seed)
        if frames.shape[0] > self.kmeans_max_frames:
            frames = frames[np.sort(rng.choice(frames.shape[0], self.kmeans_max_frames, replace=False))]
        residual = torch.from_numpy(frames.T.copy())[None]  # [1, D, N] as the quantizer sees latents
        card = CARD
        with torch.inference_mode():
            for k, layer in enumerate(self._model.quantizer.vq.layers[: self.n_q]):
                points = residual[0].T.numpy()
                n_clusters = min(card, points.shape[0])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # duplicate points (silence) -> fewer distinct clusters
                    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=self.seed + k, n_init=1,
                                         max_iter=self.kmeans_iters, batch_size=min(4096, points.shape[0]),
                                         compute_labels=False).fit(points)
                centers = km.cluster_centers_.astype(np.float32)
                if n_clusters < card:
                    centers = np.concatenate([centers, centers[np.arange(card - n_clusters) % n_clusters]])
                book = layer._codebook
                book.embed.copy_(torch.from_numpy(centers))
                book.embed_avg.copy_(book.embed)
                book.cluster_size.fill_(1.0)
                book.inited.fill_(1.0)
                residual = residual - layer.decode(layer.encode(residual))
        self._fitted = True
        self._digest = None
        log.warning("acoustic tokenizer: fitted %d random-init codebooks on %d latent frames", self.n_q, frames.shape[0])

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """The mapping's settings (k-means ones only for random_kmeans; the weights' digest is separate)."""
        out = {"sample_rate": self.sample_rate, "bandwidth": self.bandwidth, "layout": self.layout,
               "weights": self.weights_kind, "chunk_seconds": self.chunk_seconds, "fast_elu": self.fast_elu,
               "threads": self.threads}
        if self.weights_kind == "random_kmeans":
            out.update(seed=self.seed, kmeans_iters=self.kmeans_iters, kmeans_max_frames=self.kmeans_max_frames)
        return out

    def _inference_state(self) -> dict:
        """The state dict minus the VQ's training-only EMA statistics (``embed_avg``, ``cluster_size``):
        they never touch encode or decode, and leaving them out makes ``codec.pt`` a third smaller."""
        return {name: t for name, t in self._model.state_dict().items() if not name.endswith(_EMA_BUFFERS)}

    def model_files_digest(self) -> str:
        """sha256 over the codec's inference state (names, dtypes, shapes, bytes), cached until retrained."""
        if self._digest is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self._inference_state().items()):
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
                digest.update(t.numpy().tobytes())
            self._digest = digest.hexdigest()
        return self._digest

    def save(self, folder: str | Path) -> Path:
        """``tokenizer.json`` plus ``codec.pt`` (the state dict), except for pretrained weights (the name suffices)."""

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        extra = {"weights_source": self.weights_source, "random_init": self.weights_kind == "random_kmeans",
                 "codec": PRETRAINED_NAMES[self.sample_rate], "n_codebooks": self.n_q,
                 "frames_per_second": self.frames_per_second, "tokens_per_second": self.tokens_per_second}
        if self.weights_kind != "pretrained":
            state = self._inference_state()
            write_with(folder / CODEC_FILE, lambda fh: torch.save(state, fh))
            extra["codec_file"] = CODEC_FILE
        return write_config(folder, self, extra)

    @classmethod
    def from_saved(cls, folder: Path, body: dict[str, Any]) -> "AcousticTokenizer":
        settings = dict(body["config"])
        state_dict = None
        if settings["weights"] != "pretrained":
            path = saved_file(folder, CODEC_FILE, "codec weights")
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        kind = settings.pop("weights")
        tok = cls({**settings, "weights": kind if kind != "checkpoint" else str(folder / CODEC_FILE)},
                  state_dict=state_dict, weights_source=body.get("weights_source"))
        tok.weights_kind = kind
        return tok


def _load_inference_state(model, state_dict: dict, source: str, sample_rate: int) -> None:
    """Load a full or an inference-only state dict (EMA buffers absent: ``embed_avg`` := ``embed``)."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    bad = [name for name in missing if not name.endswith(_EMA_BUFFERS)] + list(unexpected)
    if bad:
        raise RuntimeError(f"acoustic tokenizer: weights from {source} do not fit EnCodec {sample_rate // 1000} kHz "
                           f"(missing or unexpected: {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''})")
    for name in missing:
        if name.endswith("embed_avg"):
            book = model.get_submodule(name.rsplit(".", 1)[0])
            book.embed_avg.copy_(book.embed)
