"""A mixture of prepared folders: one joint vocabulary, one deterministic, resumable stream.

A recipe's ``mixture`` names several prepared folders (any domains, each with its own tokenizer)
and how often to draw from each::

    mixture:
      temperature: 0.5          # p_i ∝ n_i ** α over each folder's train tokens (α = 1: as the data is)
      parts:                    # or give each part a weight (and no temperature)
        - {data: runs/chorales/data}
        - {name: text, source: {name: shakespeare}, tokenizer: {domain: text, vocab_size: 4000}}

:func:`build_mixture` checks the folders and writes a **mixture folder**: a
:class:`~shortcutlm.tokenizers.composite.CompositeTokenizer` in ``tokenizer/`` (each part's
tokenizer with its fingerprint), a ``manifest.json`` in the shard-manifest format with no shards of
its own (the joint tokenizer, summed split sizes, and ``mixture``: the folders, their domains,
offsets and probabilities), and ``domains/<domain>/manifest.json``, the same for one domain's folders
with their own split sizes (bytes, seconds), which per-domain evaluation reads. Training, checkpoints
and evaluation read a mixture folder as they read a prepared one: the loader's ``train_batches`` and
``eval_batches`` hand a manifest with ``mixture`` to :class:`MixtureTrainBatches` and
:class:`MixtureEvalBatches`.

Refused in one line naming the folder: a folder whose prepare did not finish, a domain given twice
with different tokenizers, weights that do not sum to something positive (or a negative one), an
empty train split, a multi-stream (``delay``) part.

Sampling (:class:`MixtureTrainBatches`). Every data slot (DDP rank × loader worker) reads each part
through that part's own shard plan (:class:`shortcutlm.datasets.loader._Plan`: seeded epoch order,
shards or documents split over the slots, so ranks see disjoint data), and draws which part gives
its next document from its own seeded generator with the mixture's probabilities. Each document is
remapped into the joint vocabulary and opened with its domain's marker. The probabilities are
shares of the **tokens** the model reads (as a multilingual model's p ∝ nᵅ is), so a part is drawn in
proportion to its share over its mean document length: a play of 60,000 tokens and a chorale of 300
each take the share of tokens they were given, not of documents; documents are packed
``EOS <m> d1 EOS <m'> d2 ...`` into windows as the single-domain loader packs them. The position
after ``n`` batches is computed from the manifests' document lengths and the draws alone, so a
resumed run sees exactly the batches an uninterrupted one would (the state/resume guarantee of
:class:`~shortcutlm.datasets.loader.TrainBatches`, whose batching this class reuses).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from collections.abc import Iterator

import numpy as np

from shortcutlm.artifacts.files import read_json_or_none, write_json
from shortcutlm.artifacts.manifest import FORMAT, MANIFEST, VERSION, ShardError, ShardManifest, read_manifest
from shortcutlm.datasets.loader import EvalBatches, TrainBatches, _Plan, _Split, check_batching
from shortcutlm.core.errors import UserError
from shortcutlm.tokenizers import Tokenizer, load_tokenizer
from shortcutlm.tokenizers.composite import CompositeTokenizer

__all__ = ["MixtureError", "MixturePart", "build_mixture", "is_mixture", "mixture_parts", "domain_folder",
           "MixtureTrainBatches", "MixtureEvalBatches"]

TOKENIZER = "tokenizer"
DOMAINS = "domains"
#: Where a recipe prepares the parts it names by source, inside the mixture folder.
PARTS = "parts"
#: Draws of the part that gives the next document, made per block (the sequence does not depend on it).
DRAW_BLOCK = 4096


class MixtureError(UserError, ValueError):
    """Folders that cannot be mixed; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class MixturePart:
    """One prepared folder of a mixture and its weight (None: the temperature decides)."""

    folder: Path
    weight: float | None = None


# ------------------------------------------------------------------------------ building

def _probabilities(parts: list[MixturePart], train_tokens: list[int], temperature: float | None) -> list[float]:
    if temperature is not None:
        if any(p.weight is not None for p in parts):
            named = next(p for p in parts if p.weight is not None)
            raise MixtureError(f"mixture part {named.folder}: give weights or a temperature, not both")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise MixtureError(f"mixture temperature {temperature}: give a number >= 0 (p ∝ tokens ** temperature)")
        raw = [float(n) ** float(temperature) for n in train_tokens]
    else:
        raw = []
        for part, n in zip(parts, train_tokens):
            weight = float(n) if part.weight is None else float(part.weight)  # no weight: as the data is
            if not (weight >= 0 and math.isfinite(weight)):
                raise MixtureError(f"mixture part {part.folder}: weight {part.weight} is not a number >= 0")
            raw.append(weight)
    total = sum(raw)
    if not total > 0:
        raise MixtureError(f"mixture of {', '.join(str(p.folder) for p in parts)}: the weights "
                           f"{[p.weight for p in parts]} do not sum to something positive")
    return [r / total for r in raw]


def _read_part(part: MixturePart) -> tuple[ShardManifest, Tokenizer]:
    folder = part.folder
    try:
        manifest = ShardManifest.read(folder, require_complete=False)
    except FileNotFoundError as err:
        raise MixtureError(f"mixture part {folder}: no prepared folder here ({folder / MANIFEST} is missing)") from err
    except ShardError as err:
        raise MixtureError(f"mixture part {folder}: {err}") from err
    if not manifest.complete:
        raise MixtureError(f"mixture part {folder}: its prepare did not finish ({manifest.path}); re-run prepare")
    if manifest.raw.get("mixture"):
        raise MixtureError(f"mixture part {folder}: is itself a mixture; name its prepared folders instead")
    if manifest.tokenizer.n_streams != 1:
        raise MixtureError(f"mixture part {folder}: {manifest.tokenizer.n_streams}-stream tokens (acoustic layout "
                           "delay); a joint vocabulary is one stream: prepare the audio with layout: flatten")
    if manifest.split("train").tokens <= 0:
        raise MixtureError(f"mixture part {folder}: its train split is empty ({manifest.path})")
    try:
        tokenizer = load_tokenizer(manifest.tokenizer_dir)
    except (OSError, ValueError) as err:
        raise MixtureError(f"mixture part {folder}: its tokenizer cannot be loaded: {err}") from err
    if tokenizer.fingerprint() != manifest.fingerprint:
        raise MixtureError(f"mixture part {folder}: its tokenizer folder gives fingerprint {tokenizer.fingerprint()}, "
                           f"its manifest {manifest.fingerprint}")
    return manifest, tokenizer


def _split_sums(manifests: list[ShardManifest], with_sums: bool) -> dict[str, dict[str, Any]]:
    """Documents and tokens per split over the folders (each document one marker longer in the
    joint stream); bytes and seconds too when all folders are one domain (they mean one thing)."""
    splits: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        for name, info in manifest.splits.items():
            entry = splits.setdefault(name, {"documents": 0, "tokens": 0, "shards": []})
            entry["documents"] += info.documents
            entry["tokens"] += info.tokens + (info.documents if not with_sums else 0)
            if with_sums:
                for key, value in info.sums.items():
                    if isinstance(value, (int, float)):
                        entry[key] = entry.get(key, 0) + value
    return splits


def _manifest(tokenizer: CompositeTokenizer, manifests: list[ShardManifest], parts: list[dict[str, Any]],
              temperature: float | None, one_domain: bool) -> dict[str, Any]:
    special = {k: v for k, v in tokenizer.special_ids.items() if k != "empty"}
    return {
        "format": FORMAT, "version": VERSION, "complete": True,
        "source": {"name": "mixture", "folders": [p["folder"] for p in parts]},
        "tokenizer_settings": {"domain": "joint"},
        "tokenizer": {"domain": "joint", "fingerprint": tokenizer.fingerprint(), "vocab_size": tokenizer.vocab_size,
                      "n_streams": 1, "special_ids": special, "folder": TOKENIZER},
        "splits": _split_sums(manifests, one_domain),
        "shards": [], "rejected": [],
        "mixture": {"temperature": temperature, "parts": parts},
    }


def build_mixture(parts: list[MixturePart], out: str | Path, temperature: float | None = None) -> Path:
    """Check the folders and write the mixture folder ``out`` (see the module docstring); returns it.

    Idempotent: a mixture folder already there with the same parts, tokenizers and probabilities is
    kept; one made from other folders is refused (a run never overwrites what it did not write)."""
    out = Path(out)
    if not parts:
        raise MixtureError("a mixture needs at least one prepared folder")
    read = [_read_part(p) for p in parts]
    tokenizers: dict[str, Tokenizer] = {}
    first: dict[str, Path] = {}
    rates: dict[str, float] = {}
    for part, (part_manifest, tok) in zip(parts, read):
        domain = tok.domain
        if domain in tokenizers and tokenizers[domain].fingerprint() != tok.fingerprint():
            raise MixtureError(f"mixture part {part.folder}: a second {domain} folder made with another tokenizer "
                               f"(fingerprint {tok.fingerprint()}; {first[domain]} has "
                               f"{tokenizers[domain].fingerprint()}): one domain is one vocabulary")
        tokenizers.setdefault(domain, tok)
        first.setdefault(domain, part.folder)
        if part_manifest.train_tokens_per_second and domain not in rates:
            rates[domain] = part_manifest.train_tokens_per_second
    train_tokens = [m.split("train").tokens for m, _ in read]
    probs = _probabilities(parts, train_tokens, temperature)
    joint = CompositeTokenizer(tokenizers, rates=rates)
    records = [{"folder": str(p.folder.resolve()), "domain": tok.domain, "fingerprint": tok.fingerprint(),
                "weight": p.weight, "probability": prob, "train_tokens": n}
               for p, (_, tok), prob, n in zip(parts, read, probs, train_tokens)]
    manifest = _manifest(joint, [m for m, _ in read], records, temperature, one_domain=False)
    existing = read_json_or_none(out / MANIFEST)
    if existing is not None:
        if existing.get("mixture") != manifest["mixture"] or existing.get("tokenizer") != manifest["tokenizer"]:
            raise MixtureError(f"{out}: holds {'another mixture' if existing.get('mixture') else 'something else'} "
                               f"({out / MANIFEST}); write this mixture into another folder")
        return out
    if out.exists() and any(p.name != PARTS for p in out.iterdir()):
        raise MixtureError(f"{out}: not empty and not a mixture folder; write the mixture into another folder")
    joint.save(out / TOKENIZER)
    for domain in joint.domains:
        chosen = [(m, r) for (m, _), r in zip(read, records) if r["domain"] == domain]
        view = joint.with_domain(domain)
        folder = out / DOMAINS / domain
        view.save(folder / TOKENIZER)
        write_json(folder / MANIFEST, _manifest(view, [m for m, _ in chosen], [r for _, r in chosen],
                                                temperature, one_domain=True), durable=True, sort_keys=False)
    write_json(out / MANIFEST, manifest, durable=True, sort_keys=False)  # last: its presence means done
    return out


# ------------------------------------------------------------------------------ reading

def is_mixture(manifest: dict[str, Any]) -> bool:
    return bool(manifest.get("mixture"))


def mixture_parts(manifest: dict[str, Any], where: str | Path) -> list[dict[str, Any]]:
    parts = (manifest.get("mixture") or {}).get("parts") or []
    if not parts:
        raise ShardError(f"{where}: a mixture manifest that names no folders")
    return parts


def domain_folder(mixture: str | Path, domain: str) -> Path:
    """The per-domain view folder of a mixture folder (what evaluation reads for ``domain``)."""
    return Path(mixture) / DOMAINS / domain


def _open_parts(shard_dir: str | Path, split: str) -> tuple[CompositeTokenizer, list[tuple[dict[str, Any], _Split]]]:
    """The joint tokenizer and, per part folder that has ``split``, its records and split."""
    folder = Path(shard_dir)
    manifest = read_manifest(folder)
    parts = mixture_parts(manifest, folder / MANIFEST)
    tokenizer = cast(CompositeTokenizer, load_tokenizer(folder / manifest["tokenizer"].get("folder", TOKENIZER)))
    opened = []
    for record in parts:
        part_manifest = ShardManifest.read(record["folder"])
        if part_manifest.fingerprint != record["fingerprint"]:
            raise ShardError(f"mixture {folder}: part {record['folder']} now holds tokens of fingerprint "
                             f"{part_manifest.fingerprint}, not {record['fingerprint']}; rebuild the mixture")
        if part_manifest.shards_of(split):
            opened.append((record, _Split(record["folder"], split)))
    if not opened:
        raise ValueError(f"{folder}: no part has shards for split {split!r}")
    return tokenizer, opened


def _joint_doc(tokenizer: CompositeTokenizer, domain: str, tokens: np.ndarray) -> np.ndarray:
    """One document as the joint stream holds it: marker, moved ids, joint EOS."""
    return np.concatenate([tokenizer.to_joint(domain, tokens), [tokenizer.eos_id]]).astype(np.int64)


class _PartStream:
    """One part's documents for one slot, epoch after epoch, in its shard plan's order."""

    def __init__(self, plan: _Plan, slot: int, group: int) -> None:
        self.plan, self.slot, self.group = plan, slot, max(1, group)
        self.lengths = np.zeros(0, dtype=np.int64)
        self.starts = [0]  # index of each epoch's first document
        self.shard_idx = np.zeros(0, dtype=np.int64)
        self.doc_idx = np.zeros(0, dtype=np.int64)
        self.cache: dict[int, list[np.ndarray]] = {}

    def ensure(self, n: int) -> None:
        """Know the lengths of the first ``n`` documents of this stream."""
        while len(self.lengths) < n:
            s, d = self.plan.order(len(self.starts) - 1, self.slot)
            if len(s) == 0:
                raise ValueError(f"{self.plan.data.folder}: no documents for data slot {self.slot}")
            data = self.plan.data
            self.lengths = np.concatenate([self.lengths, data.flat_tokens[data.shard_offset[s] + d]])
            self.shard_idx = np.concatenate([self.shard_idx, s])
            self.doc_idx = np.concatenate([self.doc_idx, d])
            self.starts.append(len(self.lengths))

    def epoch_of(self, k: int) -> int:
        return bisect.bisect_right(self.starts, k) - 1

    def tokens(self, k: int) -> np.ndarray:
        self.ensure(k + 1)
        shard, doc = int(self.shard_idx[k]), int(self.doc_idx[k])
        if shard not in self.cache:
            if len(self.cache) >= self.group:
                self.cache.pop(next(iter(self.cache)))
            self.cache[shard] = self.plan.data.load(shard)
        return self.cache[shard][doc]


class _MixedPlan:
    """Which document of which part each slot reads next; the plan interface :class:`TrainBatches` uses."""

    mode = "mixture"

    def __init__(self, tokenizer: CompositeTokenizer, parts: list[tuple[dict[str, Any], _Split]],
                 probabilities: list[float], seed: int, slots: int, shuffle_shards: int) -> None:
        self.tokenizer, self.slots, self.seed = tokenizer, slots, int(seed)
        self.domains = [record["domain"] for record, _ in parts]
        # ``probabilities`` are shares of the stream's tokens; a draw picks a document, so each part
        # is drawn in proportion to its share over its mean document length (marker and EOS counted).
        mean_length = np.array([(split.total_tokens + 2 * split.n_docs) / split.n_docs for _, split in parts])
        draws = np.asarray(probabilities, dtype=np.float64) / mean_length
        self.p = draws / draws.sum()
        self.plans = []
        for index, (record, split) in enumerate(parts):
            plan = _Plan(split, self.seed + 1_000_003 * (index + 1), slots, shuffle_shards)
            if plan.mode == "windows":
                raise ValueError(f"mixture part {record['folder']}: {split.n_docs} {split.split} documents, fewer "
                                 f"than the {slots} data slots (ranks × workers); prepare more or use fewer")
            self.plans.append(plan)
        self.group = shuffle_shards
        self._state: dict[int, dict[str, Any]] = {}

    def stream_of(self, slot: int) -> int:
        return slot

    def _slot(self, slot: int) -> dict[str, Any]:
        if slot not in self._state:
            self._state[slot] = {
                "rng": np.random.default_rng([self.seed, 7919, slot]),
                "choice": np.zeros(0, dtype=np.int64), "index": np.zeros(0, dtype=np.int64),
                "cum": np.zeros(0, dtype=np.int64), "count": np.zeros(len(self.plans), dtype=np.int64),
                "streams": [_PartStream(plan, slot, self.group) for plan in self.plans]}
        return self._state[slot]

    def _draw(self, state: dict[str, Any]) -> None:
        """The next block of draws: part, its document index, and the stream's cumulative length."""
        choice = state["rng"].choice(len(self.plans), size=DRAW_BLOCK, p=self.p).astype(np.int64)
        index = np.zeros(DRAW_BLOCK, dtype=np.int64)
        lengths = np.zeros(DRAW_BLOCK, dtype=np.int64)
        for part in range(len(self.plans)):
            mine = choice == part
            k = state["count"][part] + np.arange(int(mine.sum()))
            state["count"][part] += len(k)
            index[mine] = k
            stream = state["streams"][part]
            if len(k):
                stream.ensure(int(k[-1]) + 1)
                lengths[mine] = stream.lengths[k] + 2  # the marker and the EOS
        last = state["cum"][-1] if len(state["cum"]) else 0
        state["choice"] = np.concatenate([state["choice"], choice])
        state["index"] = np.concatenate([state["index"], index])
        state["cum"] = np.concatenate([state["cum"], last + np.cumsum(lengths)])

    def locate(self, slot: int, position: int) -> tuple[int, int, int]:
        """(epoch, mixed document, offset) of a position after the leading EOS; the epoch is the
        furthest any part has got to there."""
        state = self._slot(slot)
        while not len(state["cum"]) or state["cum"][-1] <= position:
            self._draw(state)
        doc = int(np.searchsorted(state["cum"], position, side="right"))
        offset = position - (int(state["cum"][doc - 1]) if doc else 0)
        epoch = max(state["streams"][int(state["choice"][j])].epoch_of(int(state["index"][j]))
                    for j in range(max(0, doc - len(self.plans) * 8), doc + 1))
        return epoch, doc, offset

    def document(self, slot: int, j: int) -> np.ndarray:
        state = self._slot(slot)
        while len(state["choice"]) <= j:
            self._draw(state)
        part, k = int(state["choice"][j]), int(state["index"][j])
        return _joint_doc(self.tokenizer, self.domains[part], state["streams"][part].tokens(k))

    def pieces(self, slot: int, position: int) -> Iterator[np.ndarray]:
        """The slot's mixed stream from ``position`` on (position 0 is the leading EOS), forever."""
        if position == 0:
            yield np.array([self.tokenizer.eos_id], dtype=np.int64)
            doc, offset = 0, 0
        else:
            _, doc, offset = self.locate(slot, position - 1)
        while True:
            piece = self.document(slot, doc)
            yield piece[offset:]
            doc, offset = doc + 1, 0


class MixtureTrainBatches(TrainBatches):
    """Infinite, resumable training batches of a mixture folder (see the module docstring); the
    batching, worker round robin, ``state_dict`` and ``load_state_dict`` are :class:`TrainBatches`'."""

    def __init__(self, shard_dir: str | Path, block_size: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, state: dict[str, Any] | None = None,
                 split: str = "train", shuffle_shards: int = 4, pin_memory: bool = False) -> None:
        check_batching(block_size, batch_size, rank, world_size)
        manifest = read_manifest(shard_dir)
        tokenizer, parts = _open_parts(shard_dir, split)
        if len(parts) != len(mixture_parts(manifest, shard_dir)):
            raise ValueError(f"{shard_dir}: not every part of the mixture has a {split!r} split")
        probabilities = [float(record["probability"]) for record, _ in parts]
        # duck-typed: the sizes and pad id TrainBatches and the benchmarks read of their data
        self.data = cast(Any, _MixedSplit(tokenizer.pad_id, sum(s.n_docs for _, s in parts),
                                          sum(s.total_tokens for _, s in parts)))
        self.config = {"seed": int(seed), "rank": rank, "world_size": world_size, "num_workers": num_workers,
                       "block_size": block_size, "batch_size": batch_size, "split": split,
                       "shuffle_shards": shuffle_shards, "fingerprint": manifest["tokenizer"]["fingerprint"],
                       "mixture": [[record["folder"], record["probability"]] for record, _ in parts]}
        self.plan = cast(Any, _MixedPlan(tokenizer, parts, probabilities, seed, world_size * max(1, num_workers),
                                         shuffle_shards))  # the plan interface TrainBatches uses
        self.pin_memory = pin_memory
        self.batches = 0
        if state is not None:
            self.load_state_dict(state)


class _MixedSplit:
    """What :class:`EvalBatches` and its callers read of ``data``: streams, sizes, pad."""

    n_streams = 1

    def __init__(self, pad: int, n_docs: int, total_tokens: int) -> None:
        self.pad, self.n_docs, self.total_tokens = pad, n_docs, total_tokens


class MixtureEvalBatches(EvalBatches):
    """One exact pass over a split of every part, part after part in the mixture's order, each
    document remapped and opened with its marker. ``targets`` counts what a single-domain pass
    would (document tokens and one EOS each): the markers are not targets of a domain's loss."""

    def __init__(self, shard_dir: str | Path, split: str, block_size: int, batch_size: int,
                 rank: int = 0, world_size: int = 1) -> None:
        check_batching(block_size, batch_size, rank, world_size)
        self.tokenizer, self.parts = _open_parts(shard_dir, split)
        n_docs = sum(s.n_docs for _, s in self.parts)
        tokens = sum(s.total_tokens for _, s in self.parts)
        self.data = cast(Any, _MixedSplit(self.tokenizer.pad_id, n_docs, tokens))  # what EvalBatches reads
        self.block, self.batch, self.rank, self.world = block_size, batch_size, rank, world_size
        stream_length = 1 + tokens + 2 * n_docs
        self.targets = tokens + n_docs
        self.n_windows = math.ceil((stream_length - 1) / block_size)
        self.windows_per_rank = math.ceil(self.n_windows / world_size)

    def _pieces(self) -> Iterator[np.ndarray]:
        yield np.array([self.tokenizer.eos_id], dtype=np.int64)
        for record, split in self.parts:
            for index in range(len(split.records)):
                for tokens in split.load(index):
                    yield _joint_doc(self.tokenizer, record["domain"], tokens)

