"""The single-domain tokenizer classes by name, imported when first asked for.

Apart from the package's ``__init__`` so that the composite (joint) tokenizer can build its parts
without importing the package that imports it.
"""
from __future__ import annotations

from pathlib import Path

from shortcutlm.tokenizers.base import Tokenizer, read_config

DOMAINS = ("text", "midi", "acoustic")


def domain_class(domain: str) -> type[Tokenizer]:
    """The tokenizer class of one domain ("text", "midi", "acoustic")."""
    if domain == "text":
        from shortcutlm.tokenizers.text import TextTokenizer
        return TextTokenizer
    if domain == "midi":
        from shortcutlm.tokenizers.midi import MidiTokenizer
        return MidiTokenizer
    if domain == "acoustic":
        from shortcutlm.tokenizers.acoustic import AcousticTokenizer
        return AcousticTokenizer
    raise ValueError(f"unknown tokenizer domain {domain!r}; expected text, midi or acoustic")


def load_domain_tokenizer(folder: str | Path) -> Tokenizer:
    """Load the single-domain tokenizer a folder holds, from its ``tokenizer.json``."""
    return domain_class(read_config(folder)["domain"]).load(folder)
