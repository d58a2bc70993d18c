# vmevents: every target sets up what it needs (virtualenv, dependencies, broker).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STACK_DIR ?= .stack
STACK := $(PY) deploy/local/stack.py
PYTEST_ARGS ?=

.PHONY: all venv run test unit integration lint typecheck bench bench-state bench-latency bench-ingest deploy-check stack-up stack-down clean

all: lint test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,deploy,ingest]'
	touch $(STAMP)

venv: $(STAMP)

## run: a local broker, the seed documents' events replayed, both stages consuming, metrics up.
run: $(STAMP)
	@bash deploy/local/run.sh

## test: unit, property and integration tests (the fixture starts Kafka + registry itself).
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check consumer tests deploy
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

typecheck: lint

## bench: events/s of each stage on a real broker, beside the broker's raw consume+produce rate.
bench: $(STAMP)
	$(PY) -m consumer.bench $(BENCH_ARGS)

## bench-state: bytes per pending operation, restore time and burst rate at 1,000,000 pending.
bench-state: $(STAMP)
	$(PY) -m consumer.bench_state $(BENCH_ARGS)

## bench-latency: p50/p99 from a raw notification to its outcome and to its open-operations record.
bench-latency: $(STAMP)
	$(PY) -m consumer.bench_latency $(BENCH_ARGS)

## bench-ingest: requests/s per CPU-second and p50/p99 to the 2xx of `vmevents ingest` on one core.
bench-ingest: $(STAMP)
	$(PY) -m consumer.bench_ingest $(BENCH_ARGS)

deploy-check: $(STAMP)
	PYTHON=$(PY) bash deploy/check/run.sh

stack-up: $(STAMP)
	$(STACK) up --registry --state-dir $(STACK_DIR)

stack-down:
	-$(STACK) down --state-dir $(STACK_DIR)

clean: stack-down
	rm -rf $(VENV) $(STACK_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis
