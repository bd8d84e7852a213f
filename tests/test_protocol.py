"""The tokenizer protocol is the only place domains differ downstream of the ids.

Generation, evaluation, diagnostics, reports and plots ask the tokenizer (``shortcutlm.tokenizers
.base``); they never branch on a domain name, never probe a tokenizer with ``getattr`` / ``hasattr``
/ ``isinstance``, and never use an attribute the base class does not declare.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shortcutlm
from shortcutlm.tokenizers import Tokenizer, TokenizerError, tokenizer_class
from shortcutlm.tokenizers.base import Encoded, LossGroups

PACKAGE = Path(shortcutlm.__file__).parent
DOMAIN_BLIND = ["generation.py", "evaluation.py", "diagnostics.py", "report.py", "report_html.py", "plots.py",
                "sample_pictures.py", "html_page.py"]

#: What a domain branch or a probe looks like. Printing the domain name in a message
#: (``f"... {tok.domain} ..."``) or recording it (``"domain": tok.domain``) matches none of them.
FORBIDDEN = {
    "compares a domain": re.compile(r"domain\s*(==|!=)|(==|!=)\s*\S*domain\b"),
    "tests membership of a domain": re.compile(r"domain\s+(not\s+)?in\s*[\(\[\{]"),
    "looks a domain up in a table": re.compile(r"\[\s*(tok|tokenizer|ck\.tokenizer|ckpt\.tokenizer)\.domain\s*\]"
                                                r"|\[\s*domain\s*\]"),
    "probes a tokenizer": re.compile(r"\b(getattr|hasattr)\(\s*(tok|tokenizer|ck\.tokenizer|ckpt\.tokenizer)\b"),
    "checks a tokenizer's class": re.compile(r"isinstance\(\s*(tok|tokenizer|ck\.tokenizer|ckpt\.tokenizer)\b"),
}
#: ``path:line`` -> why a match is fine. Empty: nothing needs an exception today.
ALLOWED: dict[str, str] = {}


def test_domain_blind_modules_never_branch_on_a_domain():
    found = []
    for name in DOMAIN_BLIND:
        for number, line in enumerate((PACKAGE / name).read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for why, pattern in FORBIDDEN.items():
                if pattern.search(code) and f"{name}:{number}" not in ALLOWED:
                    found.append(f"shortcutlm/{name}:{number} {why}: {line.strip()}")
    assert not found, "ask the tokenizer protocol instead:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_mean():
    """The grep above is only as good as its patterns: each catches its kind of branch."""
    branches = ['if tok.domain == "acoustic":', 'if domain == "midi" and render:', 'kind = "x" if d.domain != "a"',
                'if tok.domain in ("midi", "text"):', 'suffix = SUFFIX[tok.domain]', 'ACCEPTED_OUT[domain]',
                'getattr(tok, "layout", None)', 'getattr(ck.tokenizer, "decode_text", None)',
                'hasattr(tokenizer, "render")', 'isinstance(tok, MidiTokenizer)']
    for line in branches:
        assert any(p.search(line) for p in FORBIDDEN.values()), line
    fine = ['raise PromptError(f"cannot be read as {tok.domain}: {exc}")', '"domain": tok.domain,',
            'by_domain.setdefault(r["domain"], []).append(r)']
    for line in fine:
        assert not any(p.search(line) for p in FORBIDDEN.values()), line


def _tokenizer_attributes(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, attribute)`` of every attribute read on a tokenizer: names ``tok``/``tokenizer`` and
    any ``<x>.tokenizer``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        is_tok = (isinstance(value, ast.Name) and value.id in ("tok", "tokenizer")) or \
                 (isinstance(value, ast.Attribute) and value.attr == "tokenizer")
        if is_tok:
            found.append((node.lineno, node.attr))
    return found


def test_domain_blind_modules_use_only_what_the_protocol_declares():
    undeclared = []
    for name in DOMAIN_BLIND:
        tree = ast.parse((PACKAGE / name).read_text())
        for line, attr in _tokenizer_attributes(tree):
            if not hasattr(Tokenizer, attr) and attr not in Tokenizer.__annotations__:
                undeclared.append(f"shortcutlm/{name}:{line} uses tokenizer.{attr}")
    assert not undeclared, "declare it on Tokenizer (with a safe default) or do without:\n" + "\n".join(undeclared)


@pytest.mark.parametrize("domain", ["text", "midi", "acoustic"])
def test_every_domain_declares_its_artifacts_and_loads_through_the_template(domain):
    cls = tokenizer_class(domain)
    assert cls.artifact_suffixes and all(s.startswith(".") for s in cls.artifact_suffixes)
    assert "from_saved" in vars(cls) and "load" not in vars(cls)  # base.load checks the fingerprint
    assert cls.saved_files != Tokenizer.saved_files


class Plain(Tokenizer):
    """The least a domain must write: the base class's defaults answer everything else."""

    domain = "plain"
    artifact_suffixes = (".plain",)

    @property
    def vocab_size(self) -> int:
        return 8

    @property
    def special_ids(self) -> dict[str, int]:
        return {"pad": 5, "bos": 6, "eos": 7}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "Plain":
        return cls()

    def encode_document(self, doc) -> Encoded:
        return Encoded(np.arange(3))

    def decode(self, tokens, out_path, context=None) -> Path:
        return Path(out_path)

    def config(self) -> dict[str, Any]:
        return {}

    def save(self, folder) -> Path:
        return Path(folder)

    @classmethod
    def from_saved(cls, folder, body) -> "Plain":
        return cls()


def test_the_protocol_defaults_are_safe(tmp_path):
    tok = Plain()
    with pytest.raises(TokenizerError, match="seconds mean nothing for plain"):
        tok.steps_for_seconds(1.0, lambda: pytest.fail("a domain without time has no train rate to read"))
    steps, forced = tok.prompt_steps(np.array([1, 2, 3]))
    assert steps.tolist() == [1, 2, 3] and forced is None
    steps, forced = tok.prompt_steps(None)
    assert steps.shape == (0,) and forced is None
    assert tok.banned_ids(stop_at_eos=False) == (7,) and tok.stop_ids(stop_at_eos=False) == ()
    assert tok.banned_ids(stop_at_eos=True) == () and tok.stop_ids(stop_at_eos=True) == (7,)
    assert tok.ignored_ids() == [5]
    assert tok.token_labels([7, 1]) == ["<eos>", "1"]
    assert not tok.loss_groups() and tok.loss_groups().names == []
    assert tok.artifact_suffix == ".plain"
    assert tok.render(tmp_path / "a.plain", tmp_path / "a.wav") is None and not (tmp_path / "a.wav").exists()
    assert tok.artifact_seconds(tmp_path / "a.plain") is None and tok.seconds_of(np.arange(3)) is None
    assert tok.excerpt(tmp_path / "a.plain") is None and tok.describe() == {} and tok.prompt_context("x") == {}
    # Reports show nothing they cannot: no picture, no text parts, and the artifact is not played as sound.
    assert tok.picture(tmp_path / "a.plain", tmp_path / "a.png", 1.0) is None and not (tmp_path / "a.png").exists()
    assert tok.text_parts(tmp_path / "a.plain", None) is None and not tok.artifact_is_sound


def test_loss_groups_name_their_groups():
    by_id = LossGroups("family", {"a": np.array([0, 1]), "b": np.array([2])})
    assert by_id and by_id.names == ["a", "b"] and not by_id.by_stream
    by_stream = LossGroups("codebook", by_stream=("codebook_0", "codebook_1"))
    assert by_stream and by_stream.names == ["codebook_0", "codebook_1"]
