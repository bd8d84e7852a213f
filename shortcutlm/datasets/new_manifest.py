"""The head of every manifest prepare writes: its format, what it was given, and the saved tokenizer.

One definition for a one-domain prepare and a paired one (:mod:`shortcutlm.pairs.prepare`), so their
manifests read alike and a served folder's tokenizer files are checked the same way.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shortcutlm.artifacts.manifest import FORMAT, TOKENIZER_FOLDER, VERSION
from shortcutlm.datasets.shards import sha256_file, token_dtype
from shortcutlm.datasets.tokenizer_fit import tokenizer_files
from shortcutlm.tokenizers import Tokenizer


def new_manifest(source: dict[str, Any], tokenizer_spec: dict[str, Any], tokenizer: Tokenizer,
                 folder: Path) -> dict[str, Any]:
    """An unfinished manifest with no shards yet: ``folder`` is where ``tokenizer`` was saved (its files
    and their checksums are recorded)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "format": FORMAT, "version": VERSION, "complete": False, "created": now, "updated": now,
        "source": source, "tokenizer_settings": tokenizer_spec,
        "tokenizer": {"domain": tokenizer.domain, "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": int(tokenizer.vocab_size), "n_streams": int(tokenizer.n_streams),
                      "special_ids": {k: int(v) for k, v in tokenizer.special_ids.items()},
                      "folder": TOKENIZER_FOLDER, "files": tokenizer_files(folder),
                      "sha256": {name: sha256_file(folder / name) for name in tokenizer_files(folder)}},
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "splits": {}, "shards": [], "rejected": [], "inputs": {},
    }
