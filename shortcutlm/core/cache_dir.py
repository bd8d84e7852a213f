"""Where the suite keeps what it can make again: converted corpora, remote shards, measured peaks,
compiled operators."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SHORTCUTLM_CACHE"


def cache_root() -> Path:
    """``$SHORTCUTLM_CACHE``, else ``$XDG_CACHE_HOME/shortcutlm``, else ``~/.cache/shortcutlm``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "shortcutlm"
