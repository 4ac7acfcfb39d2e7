# ML Manager: `make run` starts it on the embedded default, `make test` runs every test tier.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PG_BIN ?= /usr/lib/postgresql/15/bin
DEBIAN_PACKAGES := postgresql-15 postgresql-plpython3-15
BENCH ?=

.PHONY: install run test lint unit integration e2e bench system-deps lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Everything `mlmanager up` needs, pinned by requirements.lock.
$(VENV)/.installed-core: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -c requirements.lock -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-core
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed-core

run: install
	$(BIN)/mlmanager up

# PostgreSQL 15 server binaries and PL/Python for the integration tests (Debian, as root).
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "note: missing Debian packages:$$missing (PostgreSQL tests will skip; in CI they fail)"; fi; \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/unit

integration: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/integration

e2e: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/e2e

test: system-deps $(VENV)/.installed-test lint
	$(BIN)/python -m pytest tests

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,bench]'
	touch $@

bench: system-deps $(VENV)/.installed-bench
	$(BIN)/python -m tests.bench $(BENCH)

# Re-pin the whole dependency tree after changing pyproject.toml.
lock: $(VENV)/.installed-bench
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
