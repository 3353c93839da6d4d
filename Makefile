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
# shows the findings table, then writes SARIF; then it poisons a digits CSV through one feed, audits it,
# and sanitizes it with validation against a clean holdout. The scan exits 1 because the samples are
# malicious, and audits exit 1 when they find a backdoor: make ignores those (the `-` prefix).
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/python benchmarks/corpus.py $(DEMO_DIR)/samples --demo
	-$(BIN)/bastion scan $(DEMO_DIR)/samples --no-progress
	-$(BIN)/bastion scan $(DEMO_DIR)/samples --no-progress --format sarif --output $(DEMO_DIR)/bastion.sarif
	@echo "SARIF written to $(DEMO_DIR)/bastion.sarif"
	@echo
	@echo "== Training data: fingerprint, poison, audit, sanitize, validate =="
	$(BIN)/python benchmarks/demo_data.py $(DEMO_DIR)/data
	$(BIN)/bastion data keygen $(DEMO_DIR)/data/demo-key.pem > /dev/null
	$(BIN)/bastion data fingerprint $(DEMO_DIR)/data/train.csv --source "sklearn digits via three feeds" \
		--sign-key $(DEMO_DIR)/data/demo-key.pem --output $(DEMO_DIR)/data/train.manifest.json
	-$(BIN)/bastion data audit $(DEMO_DIR)/data/train.csv --label label --source-column source
	-$(BIN)/bastion data audit $(DEMO_DIR)/data/train.csv --label label --source-column source \
		--format json --output $(DEMO_DIR)/data/audit.json
	$(BIN)/python benchmarks/demo_data.py $(DEMO_DIR)/data --check $(DEMO_DIR)/data/audit.json
	$(BIN)/bastion data sanitize $(DEMO_DIR)/data/train.csv --label label --source-column source \
		--validate --holdout $(DEMO_DIR)/data/holdout.csv --sign-key $(DEMO_DIR)/data/demo-key.pem
	$(BIN)/bastion data verify $(DEMO_DIR)/data/train.clean.csv --manifest $(DEMO_DIR)/data/train.clean.manifest.json \
		--public-key $(DEMO_DIR)/data/demo-key.pub.pem

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
