# scenetrigger: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_ARGS ?=

.PHONY: install demo test unit lint bench clean kafka-up kafka-down redis-up redis-down

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/scenetrigger demo $(DEMO_ARGS)

# Everything: lint, unit tests, integration tests against real services.
test: install lint
	scripts/run-tests.sh

unit: install
	$(BIN)/pytest -m "not integration" -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/replay.py

# Dev services on free loopback ports (tests start their own): the bootstrap
# address / URL is printed and kept in the run dir (see docs/services.md).
kafka-up: install
	scripts/kafka.sh start

kafka-down:
	scripts/kafka.sh stop

redis-up:
	scripts/redis.sh start

redis-down:
	scripts/redis.sh stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
