"""Session data for the evaluation and generation tests: real tokenizers, tiny prepared shards,
tiny checkpoints (a few optimizer steps, so losses differ between ids) — made once per session.

``tests/conftest.py`` registers this module as a plugin, so every test module can ask for these
fixtures by name; each is session-scoped and built once, on one torch thread.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pytest
import torch

from shortcutlm.artifacts.hparams import TrainingRecord
from shortcutlm.artifacts.checkpoint import save_folder
from shortcutlm.datasets.loader import read_manifest
from shortcutlm.datasets.batches import eval_batches
from shortcutlm.datasets.prepare import prepare
from shortcutlm.models import GPT, GPTConfig, stream_losses
from shortcutlm.tokenizers import load_tokenizer

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards box and judge "
         "how vexingly quick daft zebras jump in the pale moonlight").split()
TEXT = {"domain": "text", "vocab_size": 320}
BLOCK = 64
AUDIO_RATE = 24000

_MEMO: dict[str, Any] = {}


def _once(key: str, build: Callable[[], Any]) -> Any:
    """Build once per session (on one torch thread: tiny models and codecs are fastest so)."""
    if key not in _MEMO:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _MEMO[key] = build()
        finally:
            torch.set_num_threads(before)
    return _MEMO[key]


def tone(seconds: float, rate: int = AUDIO_RATE, seed: int = 0) -> np.ndarray:
    """A gliding tone plus a little noise, float32 mono."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 180 + 40 * seed
    wave = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.3 * t)) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)
    wave += 0.03 * rng.standard_normal(t.size)
    return (wave * np.minimum(1.0, 8 * t)).astype(np.float32)


def make_checkpoint(folder: Path, shard_dir: Path, steps: int = 20, seed: int = 0, **config: Any) -> Path:
    """A tiny GPT for the shards' tokenizer, trained ``steps`` AdamW steps on the train split, saved as a folder."""
    tok = load_tokenizer(shard_dir / "tokenizer")
    torch.manual_seed(seed)
    cfg = dict(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, n_streams=tok.n_streams)
    cfg.update(config)
    model = GPT(GPTConfig(**cfg))
    if steps:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        masked = torch.tensor([tok.pad_id] + ([tok.special_ids["empty"]] if "empty" in tok.special_ids else []))
        batches = list(eval_batches(shard_dir, "train", model.config.block_size, 4))
        for step in range(steps):
            batch = batches[step % len(batches)]
            targets = batch[..., 1:].masked_fill(torch.isin(batch[..., 1:], masked), -100)
            loss = stream_losses(model(batch[..., :-1]), targets).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    manifest = read_manifest(shard_dir)
    data = {"fingerprint": tok.fingerprint(), "shard_dir": str(shard_dir), "splits": manifest["splits"]}
    return save_folder(folder, model, {"variant": folder.name},
                       TrainingRecord(train={"precision": "32-true", "max_steps": steps}, step=steps, finished=True),
                       shard_dir / "tokenizer", data)


@pytest.fixture(scope="session")
def eval_root(tmp_path_factory) -> Path:
    return _once("root", lambda: tmp_path_factory.mktemp("eval_gen"))


# ------------------------------------------------------------------------------------ text

def _text_folder(root: Path) -> Path:
    folder = root / "texts"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        lines = [" ".join(rng.choice(WORDS, size=10)) for _ in range(12 + 2 * i)]
        (folder / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def text_data(eval_root) -> Path:
    def build() -> Path:
        out = eval_root / "text_shards"
        prepare({"name": "folder", "path": str(_text_folder(eval_root))}, TEXT, out, workers=1, progress=False)
        return out
    return _once("text_data", build)


@pytest.fixture(scope="session")
def text_data_other_vocab(eval_root, text_data) -> Path:
    """The same texts with another vocabulary size: another tokenizer fingerprint."""
    def build() -> Path:
        out = eval_root / "text_shards_v360"
        prepare({"name": "folder", "path": str(eval_root / "texts")}, {**TEXT, "vocab_size": 360}, out, workers=1,
                progress=False)
        return out
    return _once("text_data_other_vocab", build)


@pytest.fixture(scope="session")
def text_ckpt(eval_root, text_data) -> Path:
    return _once("text_ckpt", lambda: make_checkpoint(eval_root / "text_a", text_data, steps=30, seed=0))


@pytest.fixture(scope="session")
def text_ckpt_b(eval_root, text_data) -> Path:
    """A second, differently built checkpoint on the same shards (side-by-side reports)."""
    return _once("text_ckpt_b", lambda: make_checkpoint(eval_root / "text_b", text_data, steps=5, seed=1,
                                                        value_residual="resformer", shortcut="depth"))


# ------------------------------------------------------------------------------------ MIDI

@pytest.fixture(scope="session")
def midi_data(eval_root) -> Path:
    def build() -> Path:
        out = eval_root / "midi_shards"
        prepare({"name": "bach_chorales", "limit": 6, "cache": str(eval_root / "cache"), "workers": 2},
                {"domain": "midi"}, out, workers=1, progress=False)
        return out
    return _once("midi_data", build)


@pytest.fixture(scope="session")
def midi_files(eval_root, midi_data) -> list[Path]:
    return sorted((eval_root / "cache" / "bach_chorales").glob("*.mid"))


@pytest.fixture(scope="session")
def midi_ckpt(eval_root, midi_data) -> Path:
    return _once("midi_ckpt", lambda: make_checkpoint(eval_root / "midi_a", midi_data, steps=20))


# ------------------------------------------------------------------------------------ audio

@pytest.fixture(scope="session")
def wav_folder(eval_root) -> Path:
    def build() -> Path:
        import soundfile as sf

        folder = eval_root / "wavs"
        folder.mkdir(exist_ok=True)
        for i in range(4):
            sf.write(str(folder / f"tone{i}.wav"), tone(1.0, seed=i), AUDIO_RATE)
        return folder
    return _once("wav_folder", build)


@pytest.fixture(scope="session")
def audio_delay_data(eval_root, wav_folder) -> Path:
    """EnCodec 24 kHz at 1.5 kbps (K=2), the offline log-mel codec, delay layout."""
    def build() -> Path:
        out = eval_root / "audio_delay_shards"
        prepare({"name": "folder", "path": str(wav_folder)},
                {"domain": "acoustic", "weights": "mel_kmeans", "layout": "delay", "bandwidth": 1.5,
                 "kmeans_iters": 5}, out, workers=1, progress=False)
        return out
    return _once("audio_delay_data", build)


@pytest.fixture(scope="session")
def audio_flatten_data(eval_root, wav_folder, audio_delay_data) -> Path:
    """The same codec (its saved weights) with the flatten layout."""
    def build() -> Path:
        out = eval_root / "audio_flatten_shards"
        prepare({"name": "folder", "path": str(wav_folder)},
                {"domain": "acoustic", "weights": str(audio_delay_data / "tokenizer" / "codec.pt"),
                 "layout": "flatten", "bandwidth": 1.5}, out, workers=1, progress=False)
        return out
    return _once("audio_flatten_data", build)


@pytest.fixture(scope="session")
def audio_delay_ckpt(eval_root, audio_delay_data) -> Path:
    return _once("audio_delay_ckpt", lambda: make_checkpoint(eval_root / "audio_delay", audio_delay_data, steps=10))


@pytest.fixture(scope="session")
def audio_flatten_ckpt(eval_root, audio_flatten_data) -> Path:
    return _once("audio_flatten_ckpt",
                 lambda: make_checkpoint(eval_root / "audio_flatten", audio_flatten_data, steps=10))
