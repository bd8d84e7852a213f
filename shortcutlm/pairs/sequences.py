"""Where a paired document's target lies, for a loss on targets only.

A pair is one document ``<source marker> source <task marker> target``
(:mod:`shortcutlm.tokenizers.paired` builds it); packing puts the joint EOS after it. Training with
``train.target_only`` reads the source and predicts only the target (and the EOS that ends it):
:func:`target_spans` names the ids that open a target and those that close one, from the special
ids a shard manifest records, and :func:`shortcutlm.models.losses.targets_only` masks the rest.
"""
from __future__ import annotations

from collections.abc import Mapping

from shortcutlm.pairs.tasks import PairError
from shortcutlm.tokenizers.composite import marker_name, task_marker_name


def target_spans(special_ids: Mapping[str, int]) -> tuple[list[int], list[int]]:
    """``(ids that open a target, ids that close one)`` from a vocabulary's special ids: the task
    markers open, the joint EOS and every domain marker close (a new document starts)."""
    opens = sorted(v for k, v in special_ids.items() if k.startswith(task_marker_name("")))
    closes = sorted(v for k, v in special_ids.items() if k.startswith(marker_name("")) or k == "eos")
    if not opens:
        raise PairError("a loss on targets only needs paired data (a vocabulary with task markers); these shards "
                        "hold none")
    return opens, closes
