"""Shards → packed ``block_size + 1`` token windows for training and evaluation.

What the trainer and evaluator call is :mod:`shortcutlm.datasets.batches` (``train_batches``,
``eval_batches``), which picks these classes or a mixture's::

    TrainBatches(shard_dir, block_size, batch_size, seed, rank=0, world_size=1, num_workers=0,
                 state=None, split="train", shuffle_shards=4, pin_memory=False)
    EvalBatches(shard_dir, split, block_size, batch_size, rank=0, world_size=1)

Batches are ``torch.LongTensor`` of shape ``[B, block_size + 1]`` (one stream) or
``[B, K, block_size + 1]`` (K-stream layouts such as acoustic ``delay``); inputs are
``batch[..., :-1]``, targets ``batch[..., 1:]``.

Packing. Documents are joined into one stream ``EOS d1 EOS d2 EOS …`` (for K streams the
EOS is a column of eos ids in every stream) and window ``i`` is
``stream[i*block : i*block + block + 1]``: consecutive windows overlap by one token, so
every token after the leading EOS is a target exactly once.

Training (``TrainBatches``): infinite. Each epoch reshuffles (seeded) the shard order and,
within groups of ``shuffle_shards`` shards, the document order. Data is split over
``world_size × max(1, num_workers)`` slots so that DDP ranks and DataLoader workers see
disjoint data: by shard when there are at least as many shards as slots, else by document
index, else by window index — so no rank ever starves while others train. A slot's
documents form one continuous stream across epochs. ``state_dict()`` returns
``{"batches", "epoch", "windows", ...}``; giving it back as ``state=`` (same seed, ranks,
workers, sizes) resumes with exactly the batches an uninterrupted run would have seen (ranks move in
lockstep, so the state saved by rank 0 resumes every rank). The
resume position is computed from the manifest's per-document token counts, so it costs
no reading.

Evaluation (``EvalBatches``): one deterministic pass in manifest order; every token of
the split is a target exactly once; the last window is right-padded with the pad id
(mask it from the loss). With ``world_size > 1`` ranks take windows by index and are
padded with all-pad windows to the same number of batches.

Shards are read with webdataset's tar parser (see :func:`shards.read_shard`), from the folder or,
for the local view of a folder served from elsewhere, from its URL
(:mod:`shortcutlm.artifacts.remote`); every shard is checked against the manifest's sha256 when loaded, and a
bad one raises a :class:`~shortcutlm.datasets.shards.ShardError` naming it. Splitting and shuffling are
hand-written rather than webdataset's ``split_by_node``/``split_by_worker``/``shuffle``
stages because those cannot fall back below one shard per slot, nor seek to an exact
resume position; no webdataset pipeline (and so no default node splitter) is involved.
"""
from __future__ import annotations

import bisect
import hashlib
import io
import math
import signal
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np
import torch

from shortcutlm.artifacts.manifest import MANIFEST, ShardError, ShardManifest
from shortcutlm.artifacts.remote import shard_bytes, shard_folder, where_is
from shortcutlm.artifacts.manifest import read_manifest as _read_manifest
from shortcutlm.compat import LibraryChanged, webdataset_tar
from shortcutlm.datasets import shards as shardio

__all__ = ["read_manifest", "TrainBatches", "EvalBatches", "ShardError"]


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """The (complete) manifest of a prepared folder."""
    return _read_manifest(shard_dir)


# ------------------------------------------------------------------------------ shard access

class _Split:
    """The shards of one split as listed in the manifest, and verified loading of them."""

    def __init__(self, shard_dir: str | Path, split: str) -> None:
        self.folder = shard_folder(shard_dir)  # a URL opens as the local view of the served folder
        manifest = ShardManifest.read(self.folder)
        tok = manifest.tokenizer
        self.n_streams = tok.n_streams
        self.eos, self.pad = tok.special_ids["eos"], tok.special_ids["pad"]
        self.fingerprint = tok.fingerprint
        self.records = manifest.shards_of(split)
        if not self.records:
            known = sorted({r.split for r in manifest.shards})
            raise ValueError(f"{self.folder}: no shards for split {split!r} "
                             f"(splits here: {', '.join(known) or 'none'})")
        self.split = split
        self.doc_tokens = [np.asarray(r.doc_tokens, dtype=np.int64) for r in self.records]
        self.flat_tokens = np.concatenate(self.doc_tokens)  # per-document lengths, shard after shard
        self.shard_offset = np.concatenate([[0], np.cumsum([len(d) for d in self.doc_tokens])[:-1]]).astype(np.int64)
        self.n_docs = sum(len(d) for d in self.doc_tokens)
        self.total_tokens = int(sum(int(d.sum()) for d in self.doc_tokens))

    def load(self, index: int) -> list[np.ndarray]:
        """Every document of shard ``index``, after checking its checksum and its contents."""
        record = self.records[index]
        path = where_is(self.folder, record.name)  # a URL for a folder served from elsewhere
        data = shard_bytes(self.folder, record.name, record.size)
        if data is None:
            raise ShardError(f"shard {path} is missing (listed in the manifest)")
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise ShardError(f"shard {path} fails its checksum against {where_is(self.folder, MANIFEST)}; "
                             f"the file is corrupt or was changed — re-run prepare")
        docs = _parse(io.BytesIO(data), path)
        keys = [k for k, _ in docs]
        if keys != list(record.doc_ids):
            raise ShardError(f"shard {path}: its samples do not match the manifest's document list")
        arrays = [a for _, a in docs]
        for array, n in zip(arrays, record.doc_tokens):
            if array.shape[-1] != n or (self.n_streams > 1 and (array.ndim != 2 or array.shape[0] != self.n_streams)):
                raise ShardError(f"shard {path}: a document's shape {array.shape} disagrees with the manifest")
        return arrays

    def eos_piece(self) -> np.ndarray:
        return np.full((self.n_streams, 1) if self.n_streams > 1 else (1,), self.eos, dtype=np.int64)


def _parse(stream: io.BytesIO, path: str) -> list[tuple[str, np.ndarray]]:
    try:
        return [(key, tokens) for key, tokens, _ in (shardio.decode_sample(s, path)
                                                     for s in webdataset_tar.tar_samples(stream, str(path)))]
    except (ShardError, LibraryChanged):
        raise
    except Exception as exc:
        raise ShardError(f"shard {path} is not a readable WebDataset tar: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------ packing

def _windows(pieces: Iterator[np.ndarray], width: int, step: int, pad: int | None = None) -> Iterator[np.ndarray]:
    """Windows of ``width`` tokens starting at 0, step, 2·step … of the concatenated pieces.

    With ``pad`` set, a final partial window that still holds targets (≥ 2 tokens) is
    right-padded with it. Long pieces are sliced, never re-concatenated per window.
    """
    buf: list[np.ndarray] = []
    have, skip = 0, 0
    for piece in pieces:
        if skip:
            drop = min(skip, piece.shape[-1])
            piece, skip = piece[..., drop:], skip - drop
        if piece.shape[-1] == 0:
            continue
        buf.append(piece)
        have += piece.shape[-1]
        if have < width:
            continue
        cat = np.concatenate(buf, axis=-1) if len(buf) > 1 else buf[0]
        start = 0
        while have - start >= width:
            yield cat[..., start:start + width]
            start += step
        if start >= have:
            buf, skip, have = [], start - have, 0
        else:
            buf, have = [cat[..., start:]], have - start
    if pad is not None and have >= 2:
        cat = np.concatenate(buf, axis=-1) if len(buf) > 1 else buf[0]
        out = np.full(cat.shape[:-1] + (width,), pad, dtype=np.int64)
        out[..., :have] = cat
        yield out


def _stack(windows: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(windows).astype(np.int64, copy=False))


# ------------------------------------------------------------------------------ training plan

class _Plan:
    """Which documents each slot reads in each epoch, computed from the manifest alone."""

    def __init__(self, data: _Split, seed: int, slots: int, shuffle_shards: int) -> None:
        self.data, self.seed, self.slots = data, int(seed), slots
        self.group = max(1, int(shuffle_shards))
        n_shards = len(data.records)
        self.mode = "shards" if n_shards >= slots else "documents" if data.n_docs >= slots else "windows"
        self._cum: dict[int, list[int]] = {}  # per stream: cumulative epoch lengths

    def stream_of(self, slot: int) -> int:
        """Slots share one stream in ``windows`` mode; otherwise each has its own."""
        return 0 if self.mode == "windows" else slot

    def order(self, epoch: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, document index) arrays for one stream in one epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.data.records))
        if self.mode == "shards":
            mine = perm[stream::self.slots]
            rng = np.random.default_rng([self.seed, epoch, 1 + stream])
        else:
            mine = perm
        shard_parts, doc_parts = [], []
        for g in range(0, len(mine), self.group):
            group = mine[g:g + self.group]
            s = np.concatenate([np.full(len(self.data.doc_tokens[i]), i) for i in group])
            d = np.concatenate([np.arange(len(self.data.doc_tokens[i])) for i in group])
            p = rng.permutation(len(s))
            shard_parts.append(s[p])
            doc_parts.append(d[p])
        shard_idx, doc_idx = np.concatenate(shard_parts), np.concatenate(doc_parts)
        if self.mode == "documents":
            shard_idx, doc_idx = shard_idx[stream::self.slots], doc_idx[stream::self.slots]
        return shard_idx, doc_idx

    def lengths(self, epoch: int, stream: int) -> np.ndarray:
        """Stream tokens each document of the epoch takes (its tokens + one EOS)."""
        s, d = self.order(epoch, stream)
        return self.data.flat_tokens[self.data.shard_offset[s] + d] + 1

    def locate(self, stream: int, position: int) -> tuple[int, int, int]:
        """(epoch, document index in the epoch's order, offset) of a position after the leading EOS."""
        cum = self._cum.setdefault(stream, [0])
        while cum[-1] <= position:
            cum.append(cum[-1] + int(self.lengths(len(cum) - 1, stream).sum()))
        epoch = bisect.bisect_right(cum, position) - 1
        within = position - cum[epoch]
        doc_cum = np.cumsum(self.lengths(epoch, stream))
        doc = int(np.searchsorted(doc_cum, within, side="right"))
        return epoch, doc, within - (int(doc_cum[doc - 1]) if doc else 0)

    def pieces(self, stream: int, position: int) -> Iterator[np.ndarray]:
        """The stream from ``position`` on (position 0 is the leading EOS), forever."""
        eos = self.data.eos_piece()
        if position == 0:
            yield eos
            epoch, doc, offset = 0, 0, 0
        else:
            epoch, doc, offset = self.locate(stream, position - 1)
        cache: dict[int, list[np.ndarray]] = {}
        while True:
            shard_idx, doc_idx = self.order(epoch, stream)
            cache.clear()  # groups restart with the epoch
            for i, j in zip(shard_idx[doc:], doc_idx[doc:]):
                if i not in cache:
                    if len(cache) >= self.group:  # documents come group by group
                        cache.clear()
                    cache[int(i)] = self.data.load(int(i))
                tokens = cache[int(i)][int(j)]
                if offset < tokens.shape[-1]:
                    yield tokens[..., offset:]
                yield eos
                offset = 0
            epoch, doc = epoch + 1, 0


# ------------------------------------------------------------------------------ training batches

class _SlotBatches(torch.utils.data.IterableDataset):
    """Batches of one rank's slots; inside a DataLoader each worker serves its own slot."""

    def __init__(self, plan: _Plan, rank: int, workers: int, block: int, batch: int, batches_done: int) -> None:
        super().__init__()
        self.plan, self.rank, self.workers = plan, rank, max(1, workers)
        self.block, self.batch, self.batches_done = block, batch, batches_done

    def _consumed(self, worker: int) -> int:
        """Batches worker ``worker`` had served when ``batches_done`` batches were consumed (round robin)."""
        n, w = self.batches_done, self.workers
        return n // w + (1 if worker < n % w else 0)

    def slot_batches(self, worker: int) -> Iterator[torch.Tensor]:
        slot = self.rank * self.workers + worker
        windowed = self.plan.mode == "windows"
        stride = self.plan.slots if windowed else 1
        first = self._consumed(worker) * self.batch
        window = (slot if windowed else 0) + first * stride
        pieces = self.plan.pieces(self.plan.stream_of(slot), window * self.block)
        windows = _windows(pieces, self.block + 1, stride * self.block)
        while True:
            yield _stack([next(windows) for _ in range(self.batch)])

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.slot_batches(0)
        # The DataLoader always asks worker 0 first; after n batches the next one is due from
        # logical worker n % W, so DataLoader worker i plays logical worker (i + n) % W.
        return self.slot_batches((info.id + self.batches_done) % self.workers)


def check_batching(block_size: int, batch_size: int, rank: int, world_size: int) -> None:
    """What every loader (one folder's or a mixture's) refuses before it reads anything."""
    if block_size < 1 or batch_size < 1:
        raise ValueError("block_size and batch_size must be positive")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")


class TrainBatches:
    """Infinite, resumable iterable of training batches (see the module docstring)."""

    def __init__(self, shard_dir: str | Path, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, state: dict[str, Any] | None = None,
                 split: str = "train", shuffle_shards: int = 4, pin_memory: bool = False) -> None:
        check_batching(block_size, batch_size, rank, world_size)
        self.data = _Split(shard_dir, split)
        if self.data.total_tokens == 0:
            raise ValueError(f"{shard_dir}: split {split!r} holds no tokens")
        self.config: dict[str, Any] = {
            "seed": int(seed), "rank": rank, "world_size": world_size, "num_workers": num_workers,
            "block_size": block_size, "batch_size": batch_size, "split": split,
            "shuffle_shards": shuffle_shards, "fingerprint": self.data.fingerprint}
        self.plan = _Plan(self.data, seed, world_size * max(1, num_workers), shuffle_shards)
        self.pin_memory = pin_memory
        self.batches = 0
        if state is not None:
            self.load_state_dict(state)

    @property
    def mode(self) -> str:
        """How data is split over slots: ``shards``, ``documents`` or ``windows``."""
        return self.plan.mode

    def state_dict(self) -> dict[str, Any]:
        """Position after the batches consumed so far: ``batches``, ``windows``, ``epoch`` (+ the config)."""
        workers = max(1, self.config["num_workers"])
        source = _SlotBatches(self.plan, self.config["rank"], workers, self.config["block_size"],
                              self.config["batch_size"], self.batches)
        epochs = []
        for w in range(workers):
            slot = self.config["rank"] * workers + w
            stride = self.plan.slots if self.plan.mode == "windows" else 1
            window = ((slot if self.plan.mode == "windows" else 0)
                      + source._consumed(w) * self.config["batch_size"] * stride)
            position = window * self.config["block_size"]
            epochs.append(self.plan.locate(self.plan.stream_of(slot), position - 1)[0] if position else 0)
        return {**self.config, "batches": self.batches, "windows": self.batches * self.config["batch_size"],
                "epoch": min(epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``; the data settings must match the run that saved it.

        The rank may differ: under DDP every rank consumes the same number of batches, so the
        state saved by rank 0 resumes every rank.
        """
        for key, value in self.config.items():
            if key != "rank" and key in state and state[key] != value:
                raise ValueError(f"cannot resume the data position: it was saved with {key}={state[key]!r}, "
                                 f"this loader has {key}={value!r} (the batches would differ)")
        self.batches = int(state["batches"])

    def __iter__(self) -> Iterator[torch.Tensor]:
        workers = self.config["num_workers"]
        source = _SlotBatches(self.plan, self.config["rank"], workers, self.config["block_size"],
                              self.config["batch_size"], self.batches)
        if workers > 0:
            # batch_size=None: workers yield whole batches; in_order=True makes the DataLoader take
            # them round robin, which is what the resume arithmetic in _SlotBatches assumes.
            stream: Any = iter(torch.utils.data.DataLoader(source, batch_size=None, num_workers=workers,
                                                           in_order=True, pin_memory=self.pin_memory,
                                                           worker_init_fn=_ignore_ctrl_c))
        else:
            stream = source.slot_batches(0)
        for batch in stream:
            self.batches += 1
            yield batch.pin_memory() if self.pin_memory and workers == 0 else batch


def _ignore_ctrl_c(worker_id: int) -> None:
    """Workers leave Ctrl-C to the trainer, which stops at a step boundary and then ends them;
    a worker that died on the terminal's SIGINT would break the batch stream mid-step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)




# ------------------------------------------------------------------------------ evaluation

class EvalBatches:
    """One exact pass over a split (finite, deterministic, re-iterable); ``len()`` is the batch count."""

    def __init__(self, shard_dir: str | Path, split: str, block_size: int, batch_size: int,
                 rank: int = 0, world_size: int = 1) -> None:
        check_batching(block_size, batch_size, rank, world_size)
        self.data = _Split(shard_dir, split)
        self.block, self.batch, self.rank, self.world = block_size, batch_size, rank, world_size
        stream_length = 1 + self.data.total_tokens + self.data.n_docs
        self.targets = stream_length - 1  # every document token plus one EOS per document
        self.n_windows = math.ceil(self.targets / block_size)
        self.windows_per_rank = math.ceil(self.n_windows / world_size)

    def __len__(self) -> int:
        return math.ceil(self.windows_per_rank / self.batch)

    def _pieces(self) -> Iterator[np.ndarray]:
        eos = self.data.eos_piece()
        yield eos
        for index in range(len(self.data.records)):
            for tokens in self.data.load(index):
                yield tokens
                yield eos

    def __iter__(self) -> Iterator[torch.Tensor]:
        width = self.block + 1
        pad_shape = (self.data.n_streams, width) if self.data.n_streams > 1 else (width,)
        mine = (w for i, w in enumerate(_windows(self._pieces(), width, self.block, pad=self.data.pad))
                if i % self.world == self.rank)
        batch: list[np.ndarray] = []
        for _ in range(self.windows_per_rank):
            window = next(mine, None)
            if window is None:  # this rank's share ran out: an all-pad window keeps ranks in step
                window = np.full(pad_shape, self.data.pad, dtype=np.int64)
            batch.append(window)
            if len(batch) == self.batch:
                yield _stack(batch)
                batch = []
        if batch:
            yield _stack(batch)


