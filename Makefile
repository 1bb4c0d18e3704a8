# rtrec: `make run` starts the whole system locally, `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := serving,data,local,training,search,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv data run cloud train promote mlflow-ui test test-unit test-integration test-e2e bench lint clean

help:
	@echo "make run    - embedded cloud + ML-1M features + a production model (bootstrapped if none) + API on http://127.0.0.1:8000"
	@echo "make test   - unit, integration and end-to-end tests"
	@echo "make cloud  - only the embedded cloud on http://localhost:4566"
	@echo "make train  - train the two-tower model on ML-1M (local SageMaker-style job), register it as staging"
	@echo "make promote - gate staging against production, publish it to the local cloud (needs make run/cloud)"
	@echo "make mlflow-ui - MLflow UI on http://127.0.0.1:5000 over the local registry"
	@echo "make bench  - benchmarks (tests/bench), figures printed"
	@echo "make lint   - ruff"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(BIN)/rtrec data fetch

run: venv
	$(BIN)/rtrec run

cloud: venv
	$(BIN)/rtrec cloud up

train: data
	$(BIN)/rtrec train

promote: venv
	$(BIN)/rtrec promote --endpoint-url http://localhost:4566

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.rtrec/mlflow/mlflow.db --host 127.0.0.1 --port 5000

test: data
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check layers functions training tests

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-integration: venv
	$(BIN)/python -m pytest tests/integration

test-e2e: data
	$(BIN)/python -m pytest tests/e2e

bench: data
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(BIN)/python tests/bench/bench_ann.py
	$(BIN)/python tests/bench/bench_training.py

clean:
	rm -rf $(VENV) .pytest_cache
