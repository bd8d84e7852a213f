"""A quiet training terminal: Lightning's lines that tell a user of this suite nothing, filtered by
their exact text at the logger (or warning) that emits them. Everything else Lightning says still
shows; nothing is silenced wholesale.

:func:`quiet_training_output` is called once where training starts (:func:`shortcutlm.run.training.train`);
DDP's worker processes run that function too, so the filters hold on every rank. Calling it again
adds nothing.
"""
from __future__ import annotations

import logging
import re
import warnings

# Lightning's rank-zero messages go through ``lightning_utilities``' module logger, which
# ``lightning.pytorch`` renames to its own on import (``lightning.fabric`` alone would use its name).
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
CHECKPOINT_LOGGER = "lightning.pytorch.trainer.connectors.checkpoint_connector"
DISTRIBUTED_LOGGER = "lightning.fabric.utilities.distributed"

DROPPED: dict[str, tuple[re.Pattern[str], ...]] = {
    # Logged on every rank by every trainer.save_checkpoint(path) that leaves weights_only unset.
    # It reads like a warning about loading untrusted pickles, but it is about saving: a save
    # without weights_only keeps the optimiser, loops and callbacks, which is what a resumable
    # trainer state must hold. Loading already passes weights_only=True (trainer.fit).
    CHECKPOINT_LOGGER: (re.compile(r"`weights_only` was not set, defaulting to `False`\.$"),),
    **{name: (
        # An advertisement for Lightning's cloud logger, printed at every Trainer construction.
        re.compile(r"💡 Tip: For seamless cloud logging and experiment tracking, try installing \[litlogger\]"),
        # Device lines that only say there is nothing to use. When a GPU or TPU is present the
        # lines differ ("GPU available: True (cuda), used: True") and still show.
        re.compile(r"GPU available: False, used: False$"),
        re.compile(r"TPU available: False, using: 0 TPU cores$"),
    ) for name in RANK_ZERO_LOGGERS},
    # One line per DDP process before the process group exists; the rank-zero banner after it
    # (kept, see DDP_BANNER) already says how many processes run.
    DISTRIBUTED_LOGGER: (re.compile(r"Initializing distributed: GLOBAL_RANK: \d+, MEMBER: \d+/\d+$"),),
}

# Lightning's DDP banner: five lines (two rules of 100 dashes and an empty line) for one fact.
DDP_BANNER = re.compile(r"-{100}\ndistributed_backend=(\S+)\n"
                        r"All distributed processes registered\. Starting with (\d+) processes\n-{100}\n$")

# Warned under DDP for metrics logged at epoch level without sync_dist. Ours need no sync: the
# validation sums are reduced across ranks (strategy.reduce) before val/loss and
# val/loss_stream<k> are logged, and opt_step (the global step) is the same on every rank.
SYNC_DIST_WARNING = (r"It is recommended to use "
                     r"`self\.log\('(val/loss(_stream\d+)?|opt_step)', \.\.\., sync_dist=True\)`")


class DropMessages(logging.Filter):
    """Drops the records whose message matches one of ``patterns`` (from its start)."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(p.match(message) for p in self.patterns):
            return False
        banner = DDP_BANNER.match(message)
        if banner:  # the same fact in one line
            record.msg, record.args = f"distributed: {banner[2]} processes ({banner[1]})", ()
        return True


def quiet_training_output() -> None:
    """Install the filters above (once per process)."""
    for name, patterns in DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(patterns))
    # filterwarnings moves an identical filter to the front instead of adding a second one.
    warnings.filterwarnings("ignore", message=SYNC_DIST_WARNING)
