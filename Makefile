# Two commands matter: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
DEMO_DIR := build/demo

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# The demo builds a sample directory (benign and malicious models, generated on the fly, never loaded),
# shows the findings table, then writes SARIF. The scan exits 1 because the samples are malicious.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/python benchmarks/corpus.py $(DEMO_DIR)/samples --demo
	-$(BIN)/bastion scan $(DEMO_DIR)/samples --no-progress
	-$(BIN)/bastion scan $(DEMO_DIR)/samples --no-progress --format sarif --output $(DEMO_DIR)/bastion.sarif
	@echo "SARIF written to $(DEMO_DIR)/bastion.sarif"

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -n auto -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
