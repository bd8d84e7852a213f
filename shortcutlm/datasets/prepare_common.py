"""What every step of a prepare shares: its error, its default shard sizes, and how often it speaks
with the bars off."""
from __future__ import annotations

from shortcutlm.core.errors import UserError

DEFAULT_SHARD_TOKENS = 1 << 22
DEFAULT_SHARD_DOCUMENTS = 4096
PLAIN_EVERY_S = 180.0  # with the bars off, a plain progress line this often (read at call time: tests shorten it)


class PrepareError(UserError, ValueError):
    """A prepare run that cannot go as asked: a bad spec, no documents, no readable train file, nothing written."""
