# statekeeper: `make run` starts everything, `make test` tests everything.
# Both install what is missing first (a virtualenv in .venv, redis-server, Java/Maven).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NATIVE_STAMP := $(VENV)/.native
# rustup installs cargo here; make's PATH may not have it
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: run test unit integration lint typecheck infra-up infra-down infra-status bench bench-cache clean deps

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "statekeeper needs Python 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The compiled workflow core (native/, Rust via maturin); rebuilt when its sources change.
$(NATIVE_STAMP): $(STAMP) native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)
	@command -v cargo >/dev/null || { echo "statekeeper-native needs Rust: install it with rustup (https://rustup.rs), then run make again" >&2; exit 1; }
	$(BIN)/pip install --quiet ./native
	@touch $(NATIVE_STAMP)

deps: $(STAMP) $(NATIVE_STAMP)
	@scripts/system-deps.sh

run: deps
	$(BIN)/statekeeper run

test: deps
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ "$${CI:-}" = "true" ]; then $(BIN)/statekeeper infra down >/dev/null || true; fi; \
	exit $$status

unit: $(STAMP) $(NATIVE_STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

integration: deps
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check statekeeper tests
	$(BIN)/ruff format --check statekeeper tests

typecheck: $(STAMP)
	$(BIN)/mypy statekeeper

infra-up: deps
	$(BIN)/statekeeper infra up

infra-down: $(STAMP)
	$(BIN)/statekeeper infra down

infra-status: $(STAMP)
	$(BIN)/statekeeper infra status

clean: infra-down
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

BENCH_VENV := .venv-bench

# Quix Streams (the peer) and matplotlib pin other versions of shared libraries: own venv.
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet 'quixstreams>=3.20,<4' 'matplotlib>=3.8' 'msgpack>=1.0.8,<2'
	@touch $@

bench: deps $(BENCH_VENV)/.installed
	$(BIN)/python -m bench.workflow
	$(BENCH_VENV)/bin/python bench/plot.py

bench-cache: deps
	$(BIN)/python -m bench.cache
