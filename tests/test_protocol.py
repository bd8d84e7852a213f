"""The tokenizer protocol is the only place domains differ downstream of the ids.

Every module outside ``shortcutlm/tokenizers/`` asks the tokenizer (``shortcutlm.tokenizers.base``):
it never branches on a domain name, never probes a tokenizer with ``getattr`` / ``hasattr`` /
``isinstance``, and never uses an attribute the base class does not declare. The few modules whose job
is one domain's tokenizer, and the few lines that compare domains without branching on one, are named
below with the reason.
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
#: The domains' own code: everything else is held to the protocol.
DOMAINS_HOME = "tokenizers"
#: Modules whose job is one domain's tokenizer (benchmarks of a codec or of each tokenizer): path -> why.
DOMAIN_SPECIFIC = {
    "bench/codec.py": "benchmarks the offline acoustic codec itself: its encoder, decoder and threads",
    "bench/tokenizers.py": "benchmarks each domain's tokenizer on that domain's own files",
    "bench/data.py": "benchmarks prepare and the loader on one dataset of each domain",
    "compat/miditok_bpe.py": "the adapter over miditok's private tables: its `tok` is miditok's tokenizer, not ours",
    "datasets/mixture.py": "a joint model's data is one prepared folder per domain: the mixture keys its parts, "
                           "rates and checks by domain name (it never behaves differently for one domain)",
    "ablation/sharing.py": "the sharing experiment counts a joint run's tokens per domain: its tallies are keyed by "
                           "domain name (it never behaves differently for one domain)",
    "ablation/sharing_grid.py": "the sharing experiment collects each domain's losses, joint and separate: its "
                                "tables are keyed by domain name (no domain is treated apart)",
    "pairs/records.py": "a pair is two halves of named domains (a score and its rendering, a transcript and its "
                        "speech): a half is found by its domain's name",
    "pairs/unpaired.py": "mixes one named domain's documents into pairs: it finds the task whose target is that "
                         "domain, so their loss is counted as a target's",
    "pairs/collect.py": "collects files of named domains into pairs and checks that their lengths agree (audio "
                        "against its score's seconds or its transcript's characters)",
}

#: What a domain branch or a probe looks like. Printing the domain name in a message
#: (``f"... {tok.domain} ..."``), recording it (``"domain": tok.domain``) or leaving the key
#: ``"domain"`` out of a settings mapping matches none of them.
FORBIDDEN = {
    "compares a domain": re.compile(r"domain\s*(==|!=)|(==|!=)\s*(?![\"'])\S*domain\b"),
    "tests membership of a domain": re.compile(r"domain\s+(not\s+)?in\s*[\(\[\{]"),
    "looks a domain up in a table": re.compile(r"\[\s*(tok|tokenizer|ck\.tokenizer|ckpt\.tokenizer)\.domain\s*\]"
                                                r"|\[\s*domain\s*\]|\.get\(\s*(\w+\.)*domain\s*[,)]"),
    "probes a tokenizer": re.compile(r"\b(getattr|hasattr)\(\s*(tok|tokenizer|ck\.tokenizer|ckpt\.tokenizer)\b"),
    "checks a tokenizer's class": re.compile(r"isinstance\(\s*(tok|tokenizer|ck\.tokenizer|ckpt\.tokenizer)\s*,"
                                              r"(?!\s*(dict|list|str|int|float|tuple)\b)"),
}
#: ``(path, the line's code)`` -> why a match is fine (keyed by the code, so lines may move).
ALLOWED: dict[tuple[str, str], str] = {
    ("datasets/tokenizer_fit.py", "if tokenizer.domain != domain:"):
        "a resumed prepare checks that the saved tokenizer is of the domain asked for, and stops if not",
    ("datasets/tokenizer_fit.py", "if tok.domain != domain:"):
        "the same check for the tokenizer that the tokenizer-only step saved",
    ("datasets/tokenizer_fit.py", "if domain is not None and tokenizer.domain != domain:"):
        "prepare --tokenizer-from checks the saved tokenizer is of the domain asked for",
}
#: ``(path, attribute)`` read on something named ``tokenizer`` that is not a Tokenizer -> what it is.
NOT_A_TOKENIZER = {
    ("artifacts/manifest.py", "folder"): "ShardManifest.tokenizer is the manifest's record of the tokenizer",
}


def held_to_the_protocol() -> list[str]:
    """Every module of the package outside tokenizers/ and :data:`DOMAIN_SPECIFIC`, as ``a/b.py``."""
    paths = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob("*.py"))]
    return [p for p in paths if not p.startswith(DOMAINS_HOME + "/") and p not in DOMAIN_SPECIFIC]


def test_the_scan_covers_the_package():
    held = held_to_the_protocol()
    for path in ("run/generation.py", "run/evaluation.py", "run/diagnostics.py", "report/recipe_report.py",
                 "ablation/page.py", "models/gpt.py"):
        assert path in held
    assert not [p for p in held if p.startswith("tokenizers/")]
    assert all((PACKAGE / p).is_file() for p in DOMAIN_SPECIFIC), "a named exception no longer exists"


def test_no_module_branches_on_a_domain():
    found, used = [], set()
    for path in held_to_the_protocol():
        for number, line in enumerate((PACKAGE / path).read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for why, pattern in FORBIDDEN.items():
                if pattern.search(code):
                    if (path, code.strip()) in ALLOWED:
                        used.add((path, code.strip()))
                    else:
                        found.append(f"shortcutlm/{path}:{number} {why}: {line.strip()}")
    assert not found, "ask the tokenizer protocol instead:\n" + "\n".join(found)
    assert used == set(ALLOWED), f"allowed lines that are gone (remove them): {sorted(set(ALLOWED) - used)}"


def test_the_patterns_catch_what_they_mean():
    """The grep above is only as good as its patterns: each catches its kind of branch."""
    branches = ['if tok.domain == "acoustic":', 'if domain == "midi" and render:', 'kind = "x" if d.domain != "a"',
                'if tok.domain in ("midi", "text"):', 'suffix = SUFFIX[tok.domain]', 'ACCEPTED_OUT[domain]',
                'getattr(tok, "layout", None)', 'getattr(ck.tokenizer, "decode_text", None)',
                'hasattr(tokenizer, "render")', 'isinstance(tok, MidiTokenizer)', 'if "text" == section["domain"]:',
                'COLUMN.get(domain, "metric")', 'SUFFIX.get(tok.domain)']
    for line in branches:
        assert any(p.search(line) for p in FORBIDDEN.values()), line
    fine = ['raise PromptError(f"cannot be read as {tok.domain}: {exc}")', '"domain": tok.domain,',
            'by_domain.setdefault(r["domain"], []).append(r)', '{k: v for k, v in settings.items() if k != "domain"}',
            'if not isinstance(tokenizer, dict):', 'isinstance(tokenizer.get("sha256"), dict)',
            '(recipe.tokenizer or {}).get("domain")']
    for line in fine:
        assert not any(p.search(line) for p in FORBIDDEN.values()), line


def _tokenizer_attributes(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, attribute)`` of every attribute read on a tokenizer: names ``tok``/``tokenizer`` and
    any ``<x>.tokenizer``. A mapping's methods (``tokenizer.get``: settings read from a recipe or a
    manifest) are not reads of a tokenizer; the base class declares none of them."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node.attr in vars(dict):
            continue
        value = node.value
        is_tok = (isinstance(value, ast.Name) and value.id in ("tok", "tokenizer")) or \
                 (isinstance(value, ast.Attribute) and value.attr == "tokenizer")
        if is_tok:
            found.append((node.lineno, node.attr))
    return found


def test_no_module_uses_more_than_the_protocol_declares():
    assert not set(vars(dict)) & set(dir(Tokenizer)) - set(dir(object)), "the mapping exception would hide these"
    undeclared = []
    for path in held_to_the_protocol():
        tree = ast.parse((PACKAGE / path).read_text())
        for line, attr in _tokenizer_attributes(tree):
            declared = hasattr(Tokenizer, attr) or attr in Tokenizer.__annotations__
            if not declared and (path, attr) not in NOT_A_TOKENIZER:
                undeclared.append(f"shortcutlm/{path}:{line} uses tokenizer.{attr}")
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
    def from_settings(cls, settings: dict[str, Any]) -> Plain:
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
    def from_saved(cls, folder, body) -> Plain:
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
