# scenetrigger: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: install demo demo-live test unit lint mutate bench bench-compiled bench-worker clean kafka-up kafka-down redis-up redis-down

install: $(STAMP)

$(STAMP): pyproject.toml setup.py scenetrigger/runtime/_linescan.c
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/scenetrigger demo $(DEMO_ARGS)

# The demo with real delivery: a throwaway redis-server of its own (run dir apart
# from `make redis-up`'s) for the inbox, stopped when the demo ends or on Ctrl-C.
demo-live: install
	@export SCENETRIGGER_REDIS_RUN_DIR="$${TMPDIR:-/tmp}/scenetrigger-demo-live-redis-$$(id -u)"; \
	url="$$(scripts/redis.sh start)" || exit 1; \
	trap 'scripts/redis.sh stop' EXIT; \
	$(BIN)/scenetrigger demo --deliver live --redis-url "$$url" $(DEMO_ARGS)

# Everything: lint, unit tests, integration tests against real services.
test: install lint
	scripts/run-tests.sh

unit: install
	$(BIN)/pytest -m "not integration" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Mutation testing of the contract modules against their unit tests (scripts/mutate.py,
# docs/testing.md). Not part of `make test`: it takes minutes per module.
# MUTATE_ARGS="--module config/tokens.py" for one module; with --json, stdout is the JSON alone.
mutate: install
	@$(BIN)/pip install -q 'mutmut==2.5.1'
	@$(BIN)/python scripts/mutate.py $(MUTATE_ARGS)

bench: install
	$(BIN)/python bench/replay.py

# The worker bench (bench/worker.py). Its Quix Streams peer runs from a venv of
# its own (bench/requirements-quix.txt): Quix pins other versions of packages
# the project uses, and it is a dependency of this bench only.
QUIX_VENV := .venv-quix
$(QUIX_VENV)/.installed-stamp: bench/requirements-quix.txt
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install -q -r bench/requirements-quix.txt
	touch $@

bench-worker: install $(QUIX_VENV)/.installed-stamp
	$(BIN)/python bench/worker.py --quix-python $(QUIX_VENV)/bin/python $(BENCH_ARGS)

# Opt-in: the engine compiled by mypyc (needs gcc) in build/compiled/, tested
# there, then the bench with its replay-null-compiled row. Not part of test/demo.
bench-compiled: install
	scripts/build-compiled.sh --test
	$(BIN)/python bench/replay.py --compiled build/compiled

# Dev services on free loopback ports (tests start their own): the bootstrap
# address / URL is printed and kept in the run dir (see docs/services.md).
# NODES=3: a three-node KRaft cluster (each node a broker and a controller).
NODES ?=
kafka-up: install
	scripts/kafka.sh start $(if $(NODES),--nodes $(NODES))

kafka-down:
	scripts/kafka.sh stop

# CLUSTER=1: a Redis Cluster of 3 masters and 3 replicas (docs/deploy.md).
redis-up:
	scripts/redis.sh start $(if $(CLUSTER),--cluster)

redis-down:
	scripts/redis.sh stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
