# rtrec: `make run` starts the whole system locally, `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := serving,data,local,training,search,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv data run cloud test test-unit test-integration test-e2e bench lint clean

help:
	@echo "make run    - embedded cloud + ML-1M features + API on http://127.0.0.1:8000 (Ctrl-C stops)"
	@echo "make test   - unit, integration and end-to-end tests"
	@echo "make cloud  - only the embedded cloud on http://localhost:4566"
	@echo "make bench  - benchmarks (tests/bench), figures printed"

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

test: data
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-integration: venv
	$(BIN)/python -m pytest tests/integration

test-e2e: data
	$(BIN)/python -m pytest tests/e2e

bench: data
	$(BIN)/python -m pytest tests/bench -s -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache
