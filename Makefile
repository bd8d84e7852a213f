# Two commands do all the set-up: `make test` and `make demo`. Both build .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# uv resolves one lock for every platform and Python the project supports (pip-tools only for
# the machine it runs on); the version is pinned so that `make lock` itself is reproducible.
UV_VERSION := 0.13.9

.PHONY: venv lock lint test test-fast demo bench gpu-check gpu-check-dry clean

venv: $(STAMP)

# The environment is exactly the committed lock (hash-checked), then the project without its
# dependencies, so a fresh machine next month installs what CI tested. Remade when either changes.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Re-resolve the lock from pyproject.toml (run after changing a dependency, then commit both).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra bench --universal \
		--python-version 3.11 --generate-hashes --quiet -o $(LOCK)

# The linter and the type checker the field's codebases hold themselves to (settings in pyproject.toml);
# mypy is pointed at the environment so it sees the installed packages' types.
lint: $(STAMP)
	$(BIN)/ruff check shortcutlm tests
	$(BIN)/mypy --python-executable $(BIN)/python

test: lint
	$(BIN)/python -m pytest -q

# The quick loop while editing: everything but the end-to-end tests (marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/shortcutlm recipe recipes/bach_chorales.yaml --preset tiny --out runs/demo

bench: $(STAMP)
	$(BIN)/shortcutlm bench model --json runs/bench/model.json

# On a machine with one CUDA GPU (about 8 minutes on an H100/H200): the CUDA tests and the
# benchmarks at the paper preset's size, one JSON per section under docs/bench/gpu/ (commit them).
gpu-check: $(STAMP)
	$(BIN)/shortcutlm bench gpu --out docs/bench/gpu

# The same check's CPU-safe parts at tiny sizes (what CI runs as a test), into runs/gpu-check-dry.
gpu-check-dry: $(STAMP)
	$(BIN)/shortcutlm bench gpu --dry-run --out runs/gpu-check-dry

clean:
	rm -rf $(VENV) runs
