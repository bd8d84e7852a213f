"""``hparams.json``: the training record a checkpoint folder carries beside its weights.

Training writes it at every save (:class:`TrainingRecord`, built in ``training.py``); reports, the
ablation grid, evaluation (the precision trained in) and ``--resume`` read it back through
:meth:`shortcutlm.artifacts.checkpoint.CheckpointFolder.hparams`. The file lives in the checkpoint
folder, whose module names it (``HPARAMS``); this module owns its layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from typing import Any, ClassVar

from shortcutlm.artifacts.records import NUMBER, check_schema, field, mapping


@dataclass(frozen=True)
class TrainingRecord:
    """What a save says of its run: the settings trained with, how far it got, and its size and cost.

    ``train`` is the resolved training settings (the recipe's ``train`` section and the derived
    ``accumulate``), kept as a mapping: its keys are the recipe schema's. ``tokens_seen`` counts
    every position of every micro-batch on every device up to ``step``.
    """

    SCHEMA: ClassVar[int] = 1

    train: dict[str, Any] = dataclass_field(default_factory=dict)
    step: int | None = None
    finished: bool = False
    parameters: int | None = None
    flops_per_token: float | None = None
    peak_flops: float | None = None
    world_size: int = 1
    tokens_seen: int | None = None
    #: the checkpoint a fine-tuning run started from (``train --init-from``): folder, fingerprint, step
    init_from: dict[str, Any] | None = None

    @property
    def precision(self) -> str | None:
        """The precision the run trained in (``train.precision``), if recorded."""
        value = self.train.get("precision")
        return None if value is None else str(value)

    def to_dict(self) -> dict[str, Any]:
        """The record as written, keys in the order earlier versions wrote them."""
        body = {"train": self.train, "step": self.step, "finished": self.finished, "parameters": self.parameters,
                "flops_per_token": self.flops_per_token, "peak_flops": self.peak_flops,
                "world_size": self.world_size, "tokens_seen": self.tokens_seen}
        if self.init_from is not None:
            body["init_from"] = self.init_from
        return body

    @classmethod
    def from_dict(cls, data: Any, source: str) -> TrainingRecord:
        """The record read from ``source``; an ArtifactError naming it and the field when one is wrong.
        A field an older folder lacks takes the default above."""
        data = mapping(data, source, "the training record")
        check_schema(data, cls.SCHEMA, source)
        return cls(train=dict(field(data, "train", dict, source, {})),
                   step=field(data, "step", int, source, None, optional=True),
                   finished=field(data, "finished", bool, source, False),
                   parameters=field(data, "parameters", int, source, None, optional=True),
                   flops_per_token=field(data, "flops_per_token", NUMBER, source, None, optional=True),
                   peak_flops=field(data, "peak_flops", NUMBER, source, None, optional=True),
                   world_size=field(data, "world_size", int, source, 1),
                   tokens_seen=field(data, "tokens_seen", int, source, None, optional=True),
                   init_from=field(data, "init_from", dict, source, None, optional=True))
