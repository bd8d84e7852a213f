"""The package's imports run one way, along the pipeline, and never in a circle.

source → tokenizer → shards → model → run → report, with what every stage shares beneath them and
the commands that drive whole pipelines (stages, the CLI, benchmarks, ablations) on top. Each of the
package's folders and top-level modules sits in one layer; a module imports only from its own layer
or the ones beneath it. The artifact layer stands beside the pipeline, so its modules are placed one
by one, each at the stage whose files it records. Every import counts, a function's own included.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import shortcutlm

PACKAGE = Path(shortcutlm.__file__).parent

#: Layers from the bottom up: each names the folders and modules (dotted, under ``shortcutlm``) in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # What every stage shares and that knows no stage (``core``: errors, quiet logs, device and
    # environment facts, config parsing, clean-up, stop signals, progress), the atomic writer and lock,
    # library adapters, and drawing helpers (matplotlib figures from arrays; tokenizers draw their
    # pictures with them, reports their plots).
    ("shared", ("artifacts", "core", "artifacts.files", "artifacts.lock", "artifacts.names", "artifacts.records",
                "compat", "drawing")),
    ("source", ("documents",)),
    ("tokenizer", ("tokenizers",)),
    ("shards", ("datasets", "artifacts.manifest", "artifacts.remote")),
    ("model", ("models",)),
    ("run", ("run", "pairs", "artifacts.checkpoint", "artifacts.weights", "artifacts.hparams", "artifacts.results",
             "artifacts.sidecar", "artifacts.ablation")),
    ("report", ("report",)),
    ("drivers", ("stages", "cli", "api", "bench", "ablation")),
]
#: Folders whose modules sit in different layers: each of their modules is named in LAYERS itself.
SPLIT_FOLDERS = ("artifacts",)
#: ``(importer, imported)`` arrows against the flow that are known and owed a fix -> why they exist.
#: Each must still exist (the test says when one is gone, so the entry goes with it).
KNOWN_AGAINST_FLOW: dict[tuple[str, str], str] = {}


def module_names() -> list[str]:
    """Every module of the package, dotted without the leading ``shortcutlm.`` (a package by its folder)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [n for n in names if n]


def imports(module: str) -> set[str]:
    """The package modules ``module`` imports, anywhere in its code (dotted, without ``shortcutlm.``)."""
    path = PACKAGE / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return imports_in(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> set[str]:
    """The package modules that ``source`` (the code of ``module``) imports, relative imports resolved."""
    known = set(module_names())
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                base = "shortcutlm." + ".".join(up + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("shortcutlm."):
                name = target[len("shortcutlm."):]
                while name not in known and "." in name:  # a name imported from a module: the module
                    name = name.rpartition(".")[0]
                if name in known and name != module:
                    found.add(name)
    return found


def layer_of(module: str) -> int:
    """The layer of the longest folder or module named in :data:`LAYERS` that holds ``module``."""
    split = module.partition(".")[0] in SPLIT_FOLDERS
    best, best_len = None, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            holds = module == member or (not split and module.startswith(member + "."))
            if holds and len(member) > best_len:
                best, best_len = index, len(member)
    if best is None:
        raise KeyError(module)
    return best


def test_every_module_has_a_layer():
    """A new folder or top-level module is placed in the pipeline on purpose, not by default."""
    unplaced = []
    for module in module_names():
        try:
            layer_of(module)
        except KeyError:
            unplaced.append(module)
    assert not unplaced, f"place these in LAYERS: {unplaced}"
    named = [m for _, members in LAYERS for m in members]
    assert len(named) == len(set(named)), "a module is named in two layers"
    missing = [m for m in named if m not in module_names()]
    assert not missing, f"LAYERS names modules that no longer exist: {missing}"


def test_no_arrow_runs_against_the_pipeline():
    against, seen = [], set()
    for module in module_names():
        for target in sorted(imports(module)):
            if layer_of(target) <= layer_of(module):
                continue
            if (module, target) in KNOWN_AGAINST_FLOW:
                seen.add((module, target))
                continue
            against.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    assert not against, "arrows against the pipeline:\n" + "\n".join(against)
    gone = set(KNOWN_AGAINST_FLOW) - seen
    assert not gone, f"fixed, so remove them from KNOWN_AGAINST_FLOW: {sorted(gone)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports) as a path that returns to its start,
    or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_there_is_no_import_cycle():
    graph = {module: imports(module) for module in module_names()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_see_what_they_look_for():
    """The scan finds a function's own import and a relative one, and the cycle finder finds a circle."""
    source = ("import numpy\nimport shortcutlm.tokenizers.base as base\nfrom . import config\n"
              "from .gpt import GPT\n\n\ndef f():\n    from shortcutlm.artifacts.checkpoint import load_folder\n")
    assert imports_in(source, "models.lightning", False) == {"tokenizers.base", "models.config", "models.gpt",
                                                             "artifacts.checkpoint"}
    assert "models.config" in imports("models.gpt") and "tokenizers.base" in imports("artifacts.manifest")
    assert layer_of("models.gpt") > layer_of("tokenizers.base") > layer_of("documents")
    assert layer_of("artifacts.checkpoint") > layer_of("artifacts.manifest") > layer_of("artifacts.files")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    with pytest.raises(KeyError):
        layer_of("no_such_module")


def test_the_architecture_page_shows_these_layers():
    """docs/architecture.md's layer table names the same modules, layer by layer, in the same order."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in dict(LAYERS):
            rows[cells[0]] = tuple(name.rstrip("/").replace("/", ".") for name in re.findall(r"`([^`]+)`", cells[1]))
    assert list(rows) == [name for name, _ in LAYERS]
    for name, members in LAYERS:
        assert set(rows[name]) == set(members) - {"artifacts"}, name
