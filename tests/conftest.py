"""Fixtures shared across test folders: tiny real datasets prepared once per session."""
from __future__ import annotations

import random
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs CUDA (skipped without it); `shortcutlm bench gpu` runs "
                                       "`pytest -m gpu` on a machine with one")

# The tiny datasets, checkpoints and recipe runs of every domain that several test modules share, built once
# per session.
pytest_plugins = ["tests.fixtures_eval", "tests.fixtures_runs"]

WORDS = ("the king and queen of music speak in layered verse while the chorus sings low notes "
         "under a quiet moon every value returns to the first layer and the shortcut reads depth").split()


def write_text8(path: Path, chars: int = 60_000, seed: int = 0) -> Path:
    """A text8-like file: one line of lower-case words separated by single spaces."""
    rng = random.Random(seed)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    path.write_text(" ".join(words)[:chars])
    return path


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one CPU thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def text8_shards(tmp_path_factory) -> Path:
    """A tiny text8 prepared with a real SentencePiece tokenizer; the train split is one document."""
    from shortcutlm.datasets.prepare import prepare

    root = tmp_path_factory.mktemp("text8")
    write_text8(root / "text8")
    out = root / "shards"
    prepare({"name": "text8", "path": str(root / "text8"), "chunk_chars": 10_000_000},
            {"domain": "text", "vocab_size": 300}, out, workers=1, progress=False)
    return out


def shipped_recipes() -> list[Path]:
    """The repository's recipe files, found from this file (not the working directory); never none."""
    paths = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
    assert paths, "no recipes/*.yaml beside tests/"
    return paths


def tiny_recipe_dict(data_source: dict, tokenizer: dict, **train) -> dict:
    """A recipe small enough to train in seconds on 2 cores."""
    settings = {"max_steps": 6, "batch_size": 4, "warmup_steps": 2, "val_every": 3, "val_batches": 2,
                "log_every": 1, "lr": 3e-3, "min_lr": 3e-4}
    settings.update(train)
    return {"name": "tiny", "source": data_source, "tokenizer": tokenizer,
            "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
            "variants": {"baseline": {}, "shortcut_resformer": {"shortcut": "depth", "value_residual": "resformer"}},
            "train": settings, "generate": {"prompt_tokens": 8, "max_new_tokens": 16}}


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Tests never read or grow the user's cached machine figures (the matmul peak)."""
    monkeypatch.setenv("SHORTCUTLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
