# rtrec: `make run` starts the whole system locally, `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := serving,data,local,training,search,monitoring,infra,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv data run cloud train promote mlflow-ui test test-unit test-integration test-e2e test-infra bench lint clean \
	infra-deps emulators layers synth deploy-local

help:
	@echo "make run    - embedded cloud + ML-1M features + a production model (bootstrapped if none) + API on http://127.0.0.1:8000"
	@echo "make test   - unit, integration and end-to-end tests"
	@echo "make cloud  - only the embedded cloud on http://localhost:4566"
	@echo "make train  - train the two-tower model on ML-1M (local SageMaker-style job), register it as staging"
	@echo "make promote - gate staging against production, publish it to the local cloud (needs make run/cloud)"
	@echo "make mlflow-ui - MLflow UI on http://127.0.0.1:5000 over the local registry"
	@echo "make bench  - benchmarks (tests/bench), figures printed"
	@echo "make lint   - ruff (rules and format) and mypy (its files and settings: [tool.mypy] in pyproject.toml)"
	@echo "make layers - build the Lambda layers (core + runtime wheels for python3.12 on Amazon Linux 2023)"
	@echo "make synth  - cdk synth of infra_cdk/ into infra_cdk/cdk.out (offline)"
	@echo "make deploy-local - cdk deploy to the running embedded cloud (make cloud) or LocalStack on :4566"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(BIN)/rtrec data fetch -d ml-1m -d ml-100k -d obd

run: venv emulators
	$(BIN)/rtrec run

cloud: venv emulators
	$(BIN)/rtrec cloud up

train: data
	$(BIN)/rtrec train

promote: venv
	$(BIN)/rtrec promote --endpoint-url http://localhost:4566

mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.rtrec/mlflow/mlflow.db --host 127.0.0.1 --port 5000

test: data infra-deps emulators layers
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check layers functions training tests infra_cdk localstack
	$(BIN)/ruff format --check layers functions training tests infra_cdk localstack
	$(BIN)/mypy

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-integration: venv emulators
	$(BIN)/python -m pytest tests/integration

test-e2e: data emulators
	$(BIN)/python -m pytest tests/e2e

test-infra: infra-deps layers
	$(BIN)/python -m pytest tests/infra

# The CDK CLI (npm, pinned by infra_cdk/package-lock.json) for infra_cdk/; the app itself is Python (the infra extra).
INFRA := infra_cdk
# jsii prints a banner per synth on Node 20 (end of life; Node 22+ is supported): silenced, noted in infra_cdk/README.md.
CDK_ENV := CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true NODE_NO_WARNINGS=1 JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=18,19,20
$(INFRA)/node_modules/.package-lock.json: $(INFRA)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found; install Node.js 20+ (the CDK CLI runs on it)"; exit 2; }
	cd $(INFRA) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

infra-deps: $(INFRA)/node_modules/.package-lock.json

# The durable local cloud's emulators (npm, pinned by localstack/emulators/package-lock.json): dynalite, kinesalite,
# s3rver; their LevelDB bindings ship prebuilt, so nothing compiles.
EMULATORS := localstack/emulators
$(EMULATORS)/node_modules/.package-lock.json: $(EMULATORS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found; install Node.js 20+ (the local cloud's emulators run on it)"; exit 2; }
	cd $(EMULATORS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

emulators: $(EMULATORS)/node_modules/.package-lock.json

# Lambda layers: core (the rtrec package) and runtime (Linux wheels of layers/runtime/requirements.txt, from the
# package index; pass LAMBDA_ARCH=arm64 for Graviton, with -c lambda_architecture=arm64 at synth).
LAMBDA_ARCH ?= x86_64
LAYERS_STAMP := $(INFRA)/build/layers/.runtime-$(LAMBDA_ARCH)-$(shell cat layers/runtime/requirements.txt $(INFRA)/layers.py | sha1sum | cut -c1-12)
$(LAYERS_STAMP): layers/runtime/requirements.txt $(INFRA)/layers.py | $(STAMP)
	rm -f $(INFRA)/build/layers/.runtime-*
	$(BIN)/python $(INFRA)/layers.py all --arch $(LAMBDA_ARCH)
	touch $@

layers: $(LAYERS_STAMP)
	$(BIN)/python $(INFRA)/layers.py core

synth: venv infra-deps layers
	cd $(INFRA) && $(CDK_ENV) ./node_modules/.bin/cdk synth --quiet --no-notices

deploy-local: venv infra-deps layers
	$(BIN)/rtrec cloud deploy

bench: data
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(BIN)/python tests/bench/bench_ann.py
	$(BIN)/python tests/bench/bench_training.py

# Also the local cloud's state (tables, streams, buckets, queues under .rtrec/cloud; the moto backend's saved
# buckets under .rtrec/s3), on purpose; the MLflow registry under .rtrec/mlflow stays.
clean:
	@! node -e "require('net').connect(4566,'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))" 2>/dev/null \
		|| { echo "error: the local cloud answers on :4566 (make run / make cloud); stop it first"; exit 2; }
	rm -rf $(VENV) .pytest_cache .rtrec/cloud .rtrec/s3
