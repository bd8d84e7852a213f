"""Evaluation results: ``results.json`` (every figure) and ``results.md`` (the tables) in one folder.

``shortcutlm evaluate --out DIR`` and the recipe's evaluate stage write them; the run report and
scripts read them back through here. The JSON is ``{"split", "created", "checkpoints": [record,
...]}`` (:class:`EvaluationResults`), one :class:`EvaluationRecord` per checkpoint as
:func:`shortcutlm.run.evaluation.evaluate_checkpoint` builds it.

Non-finite numbers: JSON has none, so the one sanitiser (:func:`~shortcutlm.artifacts.files.jsonable`)
writes NaN and ±inf as ``null``. A NaN means "no targets" (a loss group the split never hit) and
stays ``null``. The one infinity an evaluation can produce is a perplexity whose loss overflows
``exp``; it is a function of ``loss_nats``, which is always written, so :func:`read_results` puts
it back (``inf``) where the loss is known. Readers of the file see the same numbers as the caller of
the evaluation, and the markdown (rendered before writing) shows ``inf``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field, replace
from pathlib import Path
from typing import Any, ClassVar
from collections.abc import Mapping

from shortcutlm.artifacts.files import read_json, write_json, write_text
from shortcutlm.artifacts.records import NUMBER, check_schema, field, mapping

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
_FIX = "run `shortcutlm evaluate` (or the recipe's evaluate stage) again"


@dataclass(frozen=True)
class LossStats:
    """Next-token loss over a set of targets: all of a split's, or one loss group's (then with its ``share``).

    ``loss_nats`` is None (NaN in memory) when the group had no targets.
    """

    tokens: int
    loss_nats: float | None
    loss_bits: float | None = None
    perplexity: float | None = None
    share: float | None = None  # of the split's targets; groups only

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": self.tokens, "loss_nats": self.loss_nats, "loss_bits": self.loss_bits,
                               "perplexity": self.perplexity}
        if self.share is not None:
            out["share"] = self.share
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str) -> LossStats:
        data = mapping(data, source, "a loss group")
        tokens = field(data, "tokens", int, source, 0)
        loss = field(data, "loss_nats", NUMBER, source, None, optional=True)
        perplexity = field(data, "perplexity", NUMBER, source, None, optional=True)
        if perplexity is None and loss is not None and tokens:
            perplexity = math.inf  # e^loss overflowed when written (see the module docstring)
        return cls(tokens, loss, field(data, "loss_bits", NUMBER, source, None, optional=True), perplexity,
                   field(data, "share", NUMBER, source, None, optional=True))


@dataclass(frozen=True)
class EosStats:
    """The targets that close a document (one EOS each) and their mean loss."""

    tokens: int
    loss_nats: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "loss_nats": self.loss_nats}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> EosStats:
        data = mapping(data, source, "the EOS figures")
        return cls(field(data, "tokens", int, source, 0), field(data, "loss_nats", NUMBER, source, None, optional=True))


@dataclass(frozen=True)
class EvaluationRecord:
    """One checkpoint's evaluation on one split: a row of ``results.json``.

    ``tokenizer`` holds the tokenizer's own facts (``Tokenizer.describe()``: the acoustic layout and
    codebooks, MIDI's multitrack handling), written among the record's keys. ``groups`` are the
    per-group losses, written as ``per_<group_kind>`` (``per_codebook``, ``per_family``). ``bytes``
    and ``seconds`` (and the rates over them) are written only when the split has them.
    """

    SCHEMA: ClassVar[int] = 1

    name: str
    folder: str
    shard_dir: str
    split: str
    domain: str
    fingerprint: str | None
    params: int
    block_size: int | None
    n_streams: int | None
    batch_size: int | None
    batches: int | None
    batches_total: int | None
    complete: bool
    documents: int | None
    loss: LossStats
    eos: EosStats | None
    device: str | None
    compute_dtype: str | None
    elapsed_s: float | None
    tokens_per_s: float | None
    tokenizer: dict[str, Any] = dataclass_field(default_factory=dict)
    bytes: int | None = None
    bits_per_byte: float | None = None
    bits_per_byte_excl_eos: float | None = None
    seconds: float | None = None
    bits_per_second: float | None = None
    approximate: bool = False
    group_kind: str | None = None
    groups: dict[str, LossStats] = dataclass_field(default_factory=dict)

    # the headline figures, read often
    @property
    def tokens(self) -> int:
        return self.loss.tokens

    @property
    def loss_nats(self) -> float | None:
        return self.loss.loss_nats

    @property
    def loss_bits(self) -> float | None:
        return self.loss.loss_bits

    @property
    def perplexity(self) -> float | None:
        return self.loss.perplexity

    def to_dict(self) -> dict[str, Any]:
        """The row as written, keys in the order earlier versions wrote them."""
        out: dict[str, Any] = {
            "name": self.name, "folder": self.folder, "shard_dir": self.shard_dir, "split": self.split,
            "domain": self.domain, "fingerprint": self.fingerprint,
            "params": self.params, "block_size": self.block_size, "n_streams": self.n_streams,
            "batch_size": self.batch_size, "batches": self.batches, "batches_total": self.batches_total,
            "complete": self.complete, "documents": self.documents,
            **self.loss.to_dict(),
            "eos": None if self.eos is None else self.eos.to_dict(),
            "device": self.device, "compute_dtype": self.compute_dtype,
            "elapsed_s": self.elapsed_s, "tokens_per_s": self.tokens_per_s,
            **self.tokenizer,
        }
        if self.bytes is not None:
            out.update(bytes=self.bytes, bits_per_byte=self.bits_per_byte,
                       bits_per_byte_excl_eos=self.bits_per_byte_excl_eos)
        if self.seconds is not None:
            out.update(seconds=self.seconds, bits_per_second=self.bits_per_second)
        out["approximate"] = self.approximate
        if self.group_kind is not None:
            out[f"per_{self.group_kind}"] = {name: stats.to_dict() for name, stats in self.groups.items()}
        return out

    def with_name(self, name: str) -> EvaluationRecord:
        return replace(self, name=name)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> EvaluationRecord:
        """A row read back from ``source``; an ArtifactError naming it and the field when one is wrong."""
        data = mapping(data, source, "an evaluation record")
        check_schema(data, cls.SCHEMA, source)
        num = NUMBER
        kinds = [key[len("per_"):] for key in data if key.startswith("per_") and isinstance(data[key], Mapping)]
        group_kind = kinds[0] if kinds else None
        groups = {str(name): LossStats.from_dict(stats, f"{source}: per_{group_kind}[{name!r}]")
                  for name, stats in (data[f"per_{group_kind}"].items() if group_kind else ())}
        eos = data.get("eos")
        facts = {key: value for key, value in data.items() if key not in _RECORD_KEYS and not key.startswith("per_")}
        return cls(
            name=field(data, "name", str, source), folder=field(data, "folder", str, source, ""),
            shard_dir=field(data, "shard_dir", str, source, ""), split=field(data, "split", str, source, ""),
            domain=field(data, "domain", str, source, ""),
            fingerprint=field(data, "fingerprint", str, source, None, optional=True),
            params=field(data, "params", int, source, 0),
            block_size=field(data, "block_size", int, source, None, optional=True),
            n_streams=field(data, "n_streams", int, source, None, optional=True),
            batch_size=field(data, "batch_size", int, source, None, optional=True),
            batches=field(data, "batches", int, source, None, optional=True),
            batches_total=field(data, "batches_total", int, source, None, optional=True),
            complete=field(data, "complete", bool, source, True),
            documents=field(data, "documents", int, source, None, optional=True),
            loss=LossStats.from_dict({k: data[k] for k in ("tokens", "loss_nats", "loss_bits", "perplexity")
                                      if k in data}, source),
            eos=None if eos is None else EosStats.from_dict(eos, f"{source}: eos"),
            device=field(data, "device", str, source, None, optional=True),
            compute_dtype=field(data, "compute_dtype", str, source, None, optional=True),
            elapsed_s=field(data, "elapsed_s", num, source, None, optional=True),
            tokens_per_s=field(data, "tokens_per_s", num, source, None, optional=True),
            tokenizer=facts,
            bytes=field(data, "bytes", int, source, None, optional=True),
            bits_per_byte=field(data, "bits_per_byte", num, source, None, optional=True),
            bits_per_byte_excl_eos=field(data, "bits_per_byte_excl_eos", num, source, None, optional=True),
            seconds=field(data, "seconds", num, source, None, optional=True),
            bits_per_second=field(data, "bits_per_second", num, source, None, optional=True),
            approximate=field(data, "approximate", bool, source, False),
            group_kind=group_kind, groups=groups,
        )


_RECORD_KEYS = frozenset({"name", "folder", "shard_dir", "split", "domain", "fingerprint", "params", "block_size",
                          "n_streams", "batch_size", "batches", "batches_total", "complete", "documents", "tokens",
                          "loss_nats", "loss_bits", "perplexity", "eos", "device", "compute_dtype", "elapsed_s",
                          "tokens_per_s", "bytes", "bits_per_byte", "bits_per_byte_excl_eos", "seconds",
                          "bits_per_second", "approximate", "schema"})


@dataclass(frozen=True)
class EvaluationResults:
    """``results.json``: the split, when it was evaluated, and one record per checkpoint."""

    SCHEMA: ClassVar[int] = 1

    split: str
    created: str | None
    checkpoints: list[EvaluationRecord]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "created": self.created,
                "checkpoints": [record.to_dict() for record in self.checkpoints]}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> EvaluationResults:
        data = mapping(data, source, "evaluation results")
        check_schema(data, cls.SCHEMA, source)
        rows = field(data, "checkpoints", list, source, [])
        return cls(field(data, "split", str, source, "test"), field(data, "created", str, source, None, optional=True),
                   [EvaluationRecord.from_dict(row, f"{source}: checkpoints[{i}]") for i, row in enumerate(rows)])


def results_json_path(folder: str | Path) -> Path:
    return Path(folder) / RESULTS_JSON


def results_md_path(folder: str | Path) -> Path:
    return Path(folder) / RESULTS_MD


def has_results(folder: str | Path) -> bool:
    return results_json_path(folder).is_file()


def write_results(folder: str | Path, results: EvaluationResults, markdown: str) -> tuple[Path, Path]:
    """Write ``results.md`` then ``results.json`` into ``folder`` (each atomically); returns both paths."""
    md = write_text(results_md_path(folder), markdown)
    js = write_json(results_json_path(folder), results.to_dict(), sort_keys=False)
    return md, js


def read_results(folder: str | Path) -> EvaluationResults:
    """The evaluation in ``folder``'s ``results.json``; an ArtifactError naming the file (and the field)
    when it is missing, unreadable or malformed."""
    path = results_json_path(folder)
    return EvaluationResults.from_dict(read_json(path, "evaluation results", _FIX), str(path))


def read_results_or_none(folder: str | Path) -> EvaluationResults | None:
    """:func:`read_results`, or None when the folder holds no results (not evaluated yet)."""
    return read_results(folder) if has_results(folder) else None


def read_markdown(folder: str | Path) -> str | None:
    """The tables of ``results.md``, or None when the folder holds none."""
    path = results_md_path(folder)
    return path.read_text(encoding="utf-8") if path.is_file() else None
