"""torch's memory tracker (tested: 2.11), from a private module (``torch.distributed._tools.mem_tracker``).

A CPU has no allocator statistics (``torch.cuda.max_memory_allocated`` has no CPU twin), so the peak
memory of a training step on a laptop cannot be read after the fact. The tracker counts every tensor
a step creates and frees, on any device, through a dispatch mode: parameters, gradients, optimiser
state, activations and temporaries. ``bench model`` reports that peak per variant.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

import torch

from shortcutlm.compat import changed

PACKAGE, TESTED = "torch", "2.11"


def peak_step_bytes(step: Callable[[], Any], *tracked: Any) -> dict[str, int]:
    """Run ``step`` once under the tracker: the peak bytes it held, in all and by kind (``Parameter``,
    ``Gradient``, ``Optstate``, ``Activation``, ``Temp``, ...), on the device that held most.
    ``tracked``: the modules and optimisers whose tensors exist before the step."""
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError as err:
        raise changed(PACKAGE, TESTED, "torch.distributed._tools.mem_tracker.MemTracker") from err
    tracker = MemTracker()
    tracker.track_external(*tracked)
    with tracker:
        step()
    snapshot = tracker.get_tracker_snapshot("peak")
    if not snapshot:
        raise changed(PACKAGE, TESTED, "MemTracker's peak snapshot (empty after a step)")
    device: torch.device = max(snapshot, key=lambda d: snapshot[d].get("Total", 0))
    kinds = snapshot[device]
    if "Total" not in kinds:
        raise changed(PACKAGE, TESTED, "the 'Total' entry of MemTracker's peak snapshot")
    return {getattr(kind, "value", str(kind)): int(value) for kind, value in kinds.items()}
