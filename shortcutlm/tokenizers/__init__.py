"""Domain tokenizers behind one protocol (see base.py)."""
from __future__ import annotations

from pathlib import Path

from shortcutlm.tokenizers.base import (Encoded, FingerprintMismatch, Tokenizer, TokenizerError, TrainingError,
                                        read_config)
from shortcutlm.tokenizers.domains import domain_class

__all__ = ["Encoded", "FingerprintMismatch", "Tokenizer", "TokenizerError", "TrainingError", "load_tokenizer",
           "tokenizer_class"]


def tokenizer_class(domain: str) -> type[Tokenizer]:
    """The tokenizer class for a domain name ("text", "midi", "acoustic", "joint"); imported lazily."""
    if domain == "joint":  # several domains in one vocabulary (made from prepared folders, not settings)
        from shortcutlm.tokenizers.composite import CompositeTokenizer
        return CompositeTokenizer
    return domain_class(domain)


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Load whichever tokenizer a folder holds, from its ``tokenizer.json``."""
    return tokenizer_class(read_config(folder)["domain"]).load(folder)
