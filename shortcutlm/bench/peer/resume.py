"""``--resume``: the finished phases of a run, kept in ``FILE.partial`` beside the JSON."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from collections.abc import Callable

from shortcutlm.artifacts.files import read_json, write_json
from shortcutlm.bench.peer.report import log


class Progress:
    """Finished phases of a run, saved to ``FILE.partial`` after each one so ``--resume`` can go on."""

    IGNORED = ("json", "resume", "command", "benchmark", "_module")

    def __init__(self, args: argparse.Namespace) -> None:
        self.path = Path(args.json + ".partial") if args.json else None
        self.signature = {k: v for k, v in sorted(vars(args).items()) if k not in self.IGNORED}
        self.state: dict[str, Any] = {"signature": self.signature}
        if args.resume:
            if self.path is None:
                raise SystemExit("--resume needs --json FILE (the progress is kept in FILE.partial)")
            if self.path.exists():
                saved = read_json(self.path, "benchmark progress file", "run without --resume to start over")
                if saved.get("signature") != self.signature:
                    raise SystemExit(f"{self.path} was saved with other settings; run without --resume to start over")
                self.state = saved
                log(f"resuming: {', '.join(k for k in saved if k != 'signature') or 'nothing finished yet'}")

    def get(self, key: str) -> Any:
        return self.state.get(key)

    def put(self, key: str, value: Any) -> Any:
        self.state[key] = value
        if self.path is not None:
            write_json(self.path, self.state, durable=True, sort_keys=False)  # what --resume goes on from
        return value

    def once(self, key: str, message: str, compute: Callable[[], Any]) -> Any:
        """The saved value of phase ``key``; else say ``message``, compute it and save it."""
        value = self.get(key)
        if value is None:
            log(message)
            value = self.put(key, compute())
        return value

    def done(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()
