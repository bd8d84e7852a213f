"""Acoustic tokens: codec codes laid out as token ids (``flatten`` or ``delay``, see codebooks.py).

Audio of any sample rate / channel count is read with ``soundfile`` (torchaudio's loaders need
torchcodec, which is absent), downmixed, resampled with ``torchaudio.functional.resample``'s
filter and encoded by a codec at a chosen bandwidth (K codebooks of 1024 entries, 75 frames per
second at 24 kHz). All of it runs ``read_seconds`` (30 s) at a time (:mod:`.audio_blocks`), so a
prepare's memory does not grow with a file's length (a 60-minute WAV read whole took 3.3 GB);
only the codes do, and they equal the whole-file encoding's (``shortcutlm bench codec --parts
memory`` measures the peak for 10- and 60-minute files). Setting ``weights`` picks the codec:

* ``pretrained`` (default): the published EnCodec, through encodec's own download (needs a
  network once; then torch.hub's cache);
* a path to an EnCodec state dict (the published ``encodec_24khz-d7cc33bc.th`` fetched by hand,
  or a ``codec.pt`` written by :meth:`AcousticTokenizer.save`);
* ``mel_kmeans``: the offline codec (:mod:`~shortcutlm.tokenizers.mel_codec`): residual k-means
  over log-mel frames at EnCodec's frame rate and codebook count, fitted on the training audio
  in seconds, decoded with Griffin-Lim. **Not the published codec**: the log and the saved
  config say so. Its decodes are smeared but recognisably their tokens' music or speech;
* ``random_kmeans`` (kept so older runs load): a random-init EnCodec whose codebooks are
  k-means-fitted on its latents. Its latents barely move over time: decoding random codes and
  all-zero codes gave waveforms with correlation 0.99999999, a constant buzz.

Why the offline codec is a log-mel one and not an EnCodec trained here (both were candidates):
on this 2-core machine one training step of EnCodec 24 kHz (14.9M parameters, L1 + multi-
resolution STFT loss) on 8 one-second clips took 5-15 s, so "minutes" of training are 20-60 of
the ~300,000 steps a codec needs, and its decodes stay noise. The log-mel codec fits in seconds
and its round trip keeps 2 s clips identifiable (``shortcutlm bench codec`` measures both
against the random codec).

The codec runs on a fixed number of torch threads (``threads``, default 1) because ids can
depend on it: torch's convolutions round differently with 1 and 2 threads, which moved 2-9%
of the random-init EnCodec's codes. One thread also avoids OpenMP's spin-waits on a busy
machine; throughput comes from encoding files in parallel processes. ``device`` (``cpu``,
``cuda`` or ``auto``) is where encoding runs; GPU arithmetic may move a few ids, so it is part
of the mapping when not ``cpu``.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from shortcutlm.artifacts.files import write_with
from shortcutlm.core.devices import AUTO, resolve_device as shared_device_rule
from shortcutlm.documents import Document
from shortcutlm.core.environment import check_torch_pair
from shortcutlm.tokenizers.codebooks import (CARD, LAYOUTS, build_delay, build_flatten, delay_valid_mask,
                                             revert_delay, revert_flatten)
from shortcutlm.tokenizers.audio_blocks import CodecAudio, unit_rms_scale
from shortcutlm.tokenizers.base import (Encoded, LossGroups, Tokenizer, TokenizerError, TrainingError, TrainRate,
                                        Waveform, saved_file, write_config)
from shortcutlm.tokenizers.encodec_codec import BANDWIDTHS, PRETRAINED_NAMES, EncodecCodec, read_state_dict
from shortcutlm.tokenizers.kmeans import FrameReservoir, FrameSample
from shortcutlm.tokenizers.mel_codec import MelCodec
from shortcutlm.tokenizers.settings import merge_settings

log = logging.getLogger(__name__)
_WARNED_OFFLINE: set[tuple[str, int]] = set()

CODEC_FILE = "codec.pt"
FITTED_KINDS = ("mel_kmeans", "random_kmeans")  # offline codecs whose codebooks are fitted on the train audio

DEFAULTS: dict[str, Any] = {
    "sample_rate": 24000,      # which EnCodec: 24000 (mono, causal) or 48000 (stereo)
    "bandwidth": 6.0,          # kbps; K = bandwidth / (10 bits * frame rate / 1000)
    "layout": "flatten",       # flatten | delay
    "weights": "pretrained",   # pretrained | mel_kmeans (offline) | random_kmeans (legacy) | state-dict path
    "seed": 0,                 # mel_kmeans / random_kmeans: k-means seed (and random_kmeans' init seed)
    # k-means budget: 10 Lloyd iterations on 20,000 frames (~20 per entry); 20 iterations lowered
    # the squared error by 0.1% and cost twice the time (see kmeans.py)
    "kmeans_iters": 10,        # mel_kmeans / random_kmeans: Lloyd iterations per codebook
    "kmeans_max_frames": 20000,  # mel_kmeans / random_kmeans: frames sampled for fitting
    "n_mels": 80,              # mel_kmeans: mel bands per frame
    "griffin_lim_iters": 32,   # mel_kmeans: phase-reconstruction iterations when decoding
    "chunk_seconds": 5.0,      # EnCodec: encode/decode in chunks of this length (see encodec_codec.py)
    "fast_elu": True,          # EnCodec: ELU as max(x, exp(min(x, 0)) - 1): see FastELU
    "threads": 1,              # torch threads the codec runs on (ids depend on it; see module docstring)
    "device": "cpu",           # where encoding runs: cpu | cuda | auto (cuda when present)
    # seconds of audio read, resampled and encoded at a time: bounds memory, never changes an id
    # (so it is not part of the mapping); 30 s of 44.1 kHz stereo is 10 MB of float32
    "read_seconds": 30.0,
}
MEL_KEYS = ("n_mels", "griffin_lim_iters")
ENCODEC_KEYS = ("chunk_seconds", "fast_elu")


class AcousticTokenizer(Tokenizer):
    """Codec codes as ids; ``n_streams`` is 1 for ``flatten`` and K for ``delay``."""

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
        self.n_mels = int(s["n_mels"])
        self.griffin_lim_iters = int(s["griffin_lim_iters"])
        self.chunk_seconds = float(s["chunk_seconds"])
        self.fast_elu = bool(s["fast_elu"])
        self.threads = int(s["threads"])
        self.read_seconds = float(s["read_seconds"])
        self.device = resolve_device(str(s["device"]))
        if self.threads < 1:
            raise ValueError("acoustic tokenizer: threads must be at least 1")
        if self.chunk_seconds <= 0:
            raise ValueError("acoustic tokenizer: chunk_seconds must be positive")
        if not self.read_seconds > 0:
            raise ValueError("acoustic tokenizer: read_seconds must be positive")
        weights = str(s["weights"])
        self.weights_source = weights_source or weights
        if weights not in ("pretrained",) + FITTED_KINDS and state_dict is None:
            # a weights file: EnCodec's state dict, or a codec.pt this class saved (either codec)
            state_dict = read_state_dict(Path(weights).expanduser())
            if MelCodec.holds_codebooks(state_dict):
                weights = "mel_kmeans"
        self.weights_kind = weights if weights in ("pretrained",) + FITTED_KINDS else "checkpoint"
        self._digest: str | None = None
        self._codec = self._build_codec(weights, state_dict)
        self.n_q = self._codec.n_q
        self.hop_length = self._codec.hop_length
        self._warn_offline()

    def _build_codec(self, weights: str, state_dict: dict | None) -> EncodecCodec | MelCodec:
        if self.weights_kind == "mel_kmeans":
            if self.sample_rate != MelCodec.sample_rate:
                raise ValueError(f"acoustic tokenizer: weights mel_kmeans is a 24 kHz mono codec; "
                                 f"set sample_rate: 24000, not {self.sample_rate}")
            n_q = EncodecCodec.codebooks_for(self.sample_rate, self.bandwidth)
            books = None if state_dict is None else state_dict["codebooks"]
            if books is not None:
                self.n_mels = int(books.shape[-1])  # a saved codec keeps the bands it was fitted with
            return MelCodec(n_q, self.n_mels, self.griffin_lim_iters, books, str(self.device))
        # encodec imports torchaudio: a torch/torchaudio pair that does not load together fails
        # here in one line naming the fix, not with an undefined symbol deep in the import.
        check_torch_pair()
        return EncodecCodec(self.sample_rate, self.bandwidth, weights, state_dict=state_dict, seed=self.seed,
                            fast_elu=self.fast_elu, chunk_seconds=self.chunk_seconds, source=self.weights_source,
                            device=str(self.device))

    def _warn_offline(self) -> None:
        """Say once per run that this is not the published codec: once per process (a recipe loads the
        tokenizer for every stage and variant), and never in the worker processes that read files for
        the process that already said it."""
        import multiprocessing

        key = (self.weights_kind, self.seed)
        if self.weights_kind not in FITTED_KINDS or key in _WARNED_OFFLINE or multiprocessing.parent_process():
            return
        _WARNED_OFFLINE.add(key)
        what = ("the OFFLINE log-mel codec (residual k-means over log-mel frames, Griffin-Lim decoding)"
                if self.weights_kind == "mel_kmeans" else
                f"EnCodec with RANDOM-INIT weights (seed {self.seed}) and k-means codebooks")
        log.warning("acoustic tokenizer: %s; this is not the published EnCodec, and decoded audio is not its "
                    "quality", what)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> AcousticTokenizer:
        return cls(settings)

    # ------------------------------------------------------------------ protocol: sizes and ids
    @property
    def frames_per_second(self) -> int:
        """EnCodec frames per second (75 at 24 kHz, 150 at 48 kHz)."""
        return int(self._codec.frame_rate)

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
        return not self._codec.fitted

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

    @classmethod
    def read_artifact(cls, path: str | Path) -> Waveform:
        """The written audio: samples [channels, n] and their rate."""
        import soundfile as sf

        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return Waveform(np.ascontiguousarray(samples.T), int(rate))

    @property
    def codec_name(self) -> str:
        """What made the codes, in words a results page can print."""
        if self.weights_kind == "mel_kmeans":
            return "offline log-mel codec (residual k-means, Griffin-Lim; not EnCodec)"
        name = PRETRAINED_NAMES[self.sample_rate]
        if self.weights_kind == "random_kmeans":
            return f"{name} with random-init weights and k-means codebooks (not the published codec)"
        return name if self.weights_kind == "pretrained" else f"{name} weights from {Path(self.weights_source).name}"

    @property
    def headline(self) -> str:
        return (f"{self.codec_name} tokens of {self.sample_rate / 1000:g} kHz audio, {self.bandwidth:g} kbps "
                f"({self.n_q} codebooks), {self.layout} layout")

    artifact_is_sound = True

    @classmethod
    def picture(cls, artifact: str | Path, out_png: str | Path, prompt_seconds: float | None = None,
                title: str = "") -> Path | None:
        """A spectrogram of the ``.wav``, the end of the prompt marked."""
        import soundfile as sf

        from shortcutlm.drawing.sample_pictures import plot_spectrogram

        wave, rate = sf.read(str(artifact), dtype="float32", always_2d=False)
        return plot_spectrogram(wave, int(rate), Path(out_png), prompt_seconds, title)

    def describe(self) -> dict[str, Any]:
        return {"layout": self.layout, "n_codebooks": self.n_q, "frames_per_second": self.frames_per_second,
                "codec": self.codec_name}

    # ------------------------------------------------------------------ audio in
    def audio(self, doc: Document) -> CodecAudio:
        """The document's audio at the codec's rate and channel count, read ``read_seconds`` at a time
        (iterate it for ``[C, n]`` float32 blocks); the header is checked here, naming the file."""
        return CodecAudio(doc, self.sample_rate, self._codec.channels, self.read_seconds)

    def read_audio(self, doc: Document) -> tuple[np.ndarray, float]:
        """Read, downmix and resample one whole file to the codec's rate: ``(wave[C, N] float32, seconds)``.

        For short files (prompts, clips); encoding and training read a block at a time instead.
        """
        audio = self.audio(doc)
        wave = np.concatenate(list(self._normalised(audio)), axis=1)
        return wave, audio.seconds

    def _normalised(self, audio: CodecAudio) -> Iterable[np.ndarray]:
        """The blocks, scaled to unit RMS over the whole file for the 48 kHz model (a first pass
        over the file measures it) and as they are for the 24 kHz one."""
        if self.sample_rate != 48000:
            return audio
        assert isinstance(self._codec, EncodecCodec)  # only EnCodec has a 48 kHz model
        scale = unit_rms_scale(audio, self._codec.chunk_samples)
        return audio if scale is None else (block / np.float32(scale) for block in audio)

    # ------------------------------------------------------------------ codec
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
        """``wave[C, N]`` at the codec's rate -> ``codes[K, ceil(N / hop)]`` (int64)."""
        with self._codec_threads():
            return self._codec.encode(wave)

    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """``codes[K, T]`` -> ``wave[C, T * hop]`` float32."""
        with self._codec_threads():
            return self._codec.decode(codes)

    # ------------------------------------------------------------------ protocol: encode / decode
    def encode_document(self, doc: Document) -> Encoded:
        """Read, resample and encode a block at a time, each block's codes written into one array
        sized from the header: only that array grows with the file's length, and the ids equal
        the whole-file encoding's. ``flatten`` ids are frame-major, so they are built block by
        block; ``delay`` shifts streams across blocks, so its codes wait whole (as int16)."""
        audio = self.audio(doc)
        k, capacity = self.n_q, -(-audio.samples // self.hop_length)
        flat = self.layout == "flatten"
        out = np.empty(capacity * k, np.int64) if flat else np.empty((k, capacity), np.int16)
        frames = 0
        with self._codec_threads():
            for codes in self._codec.encode_blocks(self._normalised(audio)):
                n = codes.shape[1]
                if frames + n > capacity:  # a read never gives more samples than the header: a bug if so
                    raise TokenizerError(f"{doc.describe()}: the codec gave more than the {capacity} frames "
                                         "the file's header implies")
                if flat:
                    out[frames * k:(frames + n) * k] = self.codes_to_tokens(codes)
                else:
                    out[:, frames:frames + n] = codes
                frames += n
        tokens = out[: frames * k] if flat else self.codes_to_tokens(out[:, :frames])
        return Encoded(tokens, {"seconds": audio.seconds, "frames": frames})

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

    # ------------------------------------------------------------------ training (offline codecs)
    trains_on_samples = True

    def train(self, documents: Iterable[Document]) -> dict[str, str]:
        """Fit the codebooks by k-means on the train audio (``mel_kmeans`` / ``random_kmeans`` only;
        pretrained and checkpoint weights need nothing). Unreadable files are skipped and returned."""
        if self.weights_kind not in FITTED_KINDS:
            return {}
        return super().train(documents)

    def training_sample(self, doc: Document) -> FrameSample:
        """What the codebooks are fitted on for one file: its log-mel frames (``mel_kmeans``) or the
        encoder's latents (``random_kmeans``), ``[frames, D]`` float32 in time order, with their
        count. A file of more than ``kmeans_max_frames`` frames keeps a seeded uniform subset of
        that many (the fit never uses more), chosen as the file streams through, so a sample's
        size is bounded too; the fit still draws from each file by its whole length."""
        audio = self.audio(doc)
        keep = FrameReservoir(self.kmeans_max_frames, self.seed)
        with self._codec_threads():
            for frames in self._codec.feature_blocks(self._normalised(audio)):
                keep.add(frames)
        return keep.sample()

    def fit(self, samples: Sequence[np.ndarray | FrameSample]) -> None:
        """k-means per residual codebook on the train files' frames, residual by residual."""
        if self.weights_kind not in FITTED_KINDS:
            return
        if not samples:
            raise TrainingError("acoustic tokenizer: no readable train audio to fit the codebooks on")
        with self._codec_threads():  # OpenMP threads on busy cores spin: 2 threads fitted 3.5x slower than 1
            used = self._codec.fit(samples, self.seed, self.kmeans_iters, self.kmeans_max_frames)
        self._digest = None
        log.warning("acoustic tokenizer: fitted %d %s codebooks on %d frames", self.n_q,
                    "log-mel" if self.weights_kind == "mel_kmeans" else "random-init EnCodec", used)

    # ------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """The mapping's settings: each codec's own, and the k-means ones for the fitted codecs
        (the weights' digest is separate). ``device`` is left out: it says where, not what."""
        out: dict[str, Any] = {"sample_rate": self.sample_rate, "bandwidth": self.bandwidth, "layout": self.layout,
                               "weights": self.weights_kind}
        if self.weights_kind == "mel_kmeans":
            out.update(n_mels=self.n_mels, griffin_lim_iters=self.griffin_lim_iters)
        else:
            out.update(chunk_seconds=self.chunk_seconds, fast_elu=self.fast_elu)
        out["threads"] = self.threads
        if self.weights_kind in FITTED_KINDS:
            out.update(seed=self.seed, kmeans_iters=self.kmeans_iters, kmeans_max_frames=self.kmeans_max_frames)
        return out

    def _inference_state(self) -> dict:
        return self._codec.state_dict()

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
                 "codec": self.codec_name, "published_codec": self.weights_kind not in FITTED_KINDS,
                 "n_codebooks": self.n_q,
                 "frames_per_second": self.frames_per_second, "tokens_per_second": self.tokens_per_second,
                 "read_seconds": self.read_seconds}  # kept for prepare's workers; not the mapping's
        if self.weights_kind != "pretrained":
            state = self._inference_state()
            write_with(folder / CODEC_FILE, lambda fh: torch.save(state, fh))
            extra["codec_file"] = CODEC_FILE
        return write_config(folder, self, extra)

    @classmethod
    def from_saved(cls, folder: Path, body: dict[str, Any]) -> AcousticTokenizer:
        settings = {**body["config"], "read_seconds": float(body.get("read_seconds", DEFAULTS["read_seconds"]))}
        state_dict = None
        if settings["weights"] != "pretrained":
            path = saved_file(folder, CODEC_FILE, "codec weights")
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        kind = settings.pop("weights")
        tok = cls({**settings, "weights": kind if kind != "checkpoint" else str(folder / CODEC_FILE)},
                  state_dict=state_dict, weights_source=body.get("weights_source"))
        tok.weights_kind = kind
        return tok


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (an error when torch sees none) or ``auto`` (the project's one rule:
    :func:`shortcutlm.core.devices.resolve_device`)."""
    if name == AUTO:
        return torch.device(shared_device_rule(name))
    if name not in ("cpu", "cuda"):
        raise ValueError(f"acoustic tokenizer: device must be cpu, cuda or auto, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("acoustic tokenizer: device cuda was asked for, but torch sees no CUDA device "
                         "(use device: auto to fall back to the CPU)")
    return torch.device(name)
