# Two commands do all the set-up: `make test` and `make demo`. Both build .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench clean

venv: $(STAMP)

# Remade whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/shortcutlm recipe recipes/bach_chorales.yaml --preset tiny --out runs/demo

bench: $(STAMP)
	$(BIN)/shortcutlm bench model --json runs/bench/model.json

clean:
	rm -rf $(VENV) runs
