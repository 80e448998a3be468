# gridcap build/test harness.  `make` (or `make help`) lists the targets.
SHELL := bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q --require-servers tests
WITH_SERVERS := tests/servers/with-servers.sh

.PHONY: help install run test lint typecheck imports check bench clean

help: ## Show this list of targets
	@grep -hE '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(STAMP) ## Create .venv and install gridcap with dev extras

run: install ## Demo: the DSO service (8080), a CPO adapter (8081, OCPP 9000) and simulated charge points
	mkdir -p var
	$(BIN)/gridcap init-db --demo
	@# three processes: Ctrl-C (or SIGTERM to the group) stops each once; when one ends, the others are stopped
	pids=; trap wait INT TERM; \
	$(BIN)/gridcap serve --with-scheduler & pids="$$pids $$!"; \
	$(BIN)/gridcap cpo serve --demo & pids="$$pids $$!"; \
	$(BIN)/gridcap simulate --demo --mean-idle-s 60 --mean-stay-s 1800 --meter-interval-s 30 & pids="$$pids $$!"; \
	wait -n; kill $$pids 2>/dev/null; wait

test: install ## Run the test suite against real servers started for the run
	$(WITH_SERVERS) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check service forecasts tests
	$(BIN)/ruff format --check service forecasts tests

typecheck: install ## mypy over service and forecasts
	$(BIN)/mypy service forecasts

imports: install ## Check import layering contracts (import-linter)
	$(BIN)/lint-imports

check: ## lint, typecheck, imports, then test
	$(MAKE) lint
	$(MAKE) typecheck
	$(MAKE) imports
	$(MAKE) test

bench: install ## Run the benchmarks against real servers
	$(WITH_SERVERS) $(BIN)/python -m pytest -q -s tests/benchmarks --benchmarks

clean: ## Remove .venv, var/ and build/cache artefacts
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache build *.egg-info
