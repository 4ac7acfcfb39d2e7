# ML Manager: `make run` starts it on the embedded default, `make test` runs every test tier.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PG_BIN ?= /usr/lib/postgresql/15/bin
# Java 17 and Maven build mlrunner, the JVM scorer of H2O models; wrk drives the serving
# benchmark; the browser tests (tests/ui) drive Debian's chromium and inject axe-core
# installed with npm.
DEBIAN_PACKAGES := postgresql-15 postgresql-plpython3-15 openjdk-17-jdk-headless maven wrk chromium npm
BENCH ?=
# Where PostgreSQL's PL/Python (Debian's /usr/bin/python3, run as the postgres user)
# finds numpy and onnxruntime; the database reads it from mlmanager.plpython_path.
PLPYTHON_LIBS ?= /opt/mlmanager/plpython
# numpy + onnxruntime score ONNX models; mlflow-skinny + pandas the pyfunc fallback;
# py4j talks to mlrunner (H2O models).
PLPYTHON_PACKAGES := numpy onnxruntime mlflow-skinny pandas py4j
# Where `make mlrunner` installs the JVM scorer's jar (readable by the database's user).
MLRUNNER_HOME ?= /opt/mlmanager/mlrunner
# Where `make elasticsearch` installs the real Elasticsearch node the watcher's tests start
# (server jar and its netty module from Maven Central, tests/elasticsearch/pom.xml).
ELASTICSEARCH_HOME ?= /opt/mlmanager/elasticsearch
# Helm, built from the Go module proxy (no download site is reachable), for the chart's tests.
HELM_VERSION := v4.3.2
HELM_HOME ?= /opt/mlmanager/helm
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
# Where `make kube` builds the Kubernetes control plane the tests start (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok: tests/kube/build.sh).
KUBE_HOME ?= /opt/mlmanager/kube
# Azurite (npm), the Azure Blob Storage emulator the Azure ML tests upload models to.
AZURITE_VERSION := 3.37.0
AZURITE_HOME ?= /opt/mlmanager/azurite

.PHONY: install run test lint unit integration e2e ui ui-deps bench system-deps plpython-deps mlrunner elasticsearch helm kube azurite lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Everything `mlmanager up` needs, pinned by requirements.lock.
$(VENV)/.installed-core: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install --quiet -c requirements.lock -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-core
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,keras,spark,azure]'
	touch $@

install: $(VENV)/.installed-core

run: install
	$(BIN)/mlmanager up

# PostgreSQL 15 server binaries and PL/Python for the integration tests (Debian, as root).
# A package counts as present when dpkg has it or its command is on PATH (a machine with
# NodeSource's nodejs has npm, and Debian's npm package would conflict with it).
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "note: missing Debian packages:$$missing (PostgreSQL tests will skip; in CI they fail)"; fi; \
	fi

# numpy and onnxruntime for the database's own Python (same CPython 3.11 ABI as the venv),
# versions from requirements.lock, readable by the postgres user.
plpython-deps: $(BIN)/python
	@if ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then \
	  echo "plpython-deps: the venv must be CPython 3.11 like Debian 12's /usr/bin/python3"; exit 1; fi
	@mkdir -p $(PLPYTHON_LIBS)
	@if [ ! -f $(PLPYTHON_LIBS)/.installed ] || ! cmp -s requirements.lock $(PLPYTHON_LIBS)/.installed; then \
	  echo "installing $(PLPYTHON_PACKAGES) into $(PLPYTHON_LIBS)"; \
	  $(BIN)/pip install --quiet --upgrade --only-binary=:all: --target $(PLPYTHON_LIBS) \
	    -c requirements.lock $(PLPYTHON_PACKAGES) && \
	  chmod -R a+rX $(PLPYTHON_LIBS) && cp requirements.lock $(PLPYTHON_LIBS)/.installed; fi

# The JVM scorer: builds the jar (running its JUnit tests) and installs it.
mlrunner:
	mvn -B -ntp -f mlrunner/pom.xml package | grep -E "Tests run:|BUILD|ERROR|FAIL" ; test $${PIPESTATUS[0]} -eq 0
	install -D -m 0644 mlrunner/target/mlrunner.jar $(MLRUNNER_HOME)/mlrunner.jar

# A single Elasticsearch 8.19 node on this JVM (no download from elastic.co, no Docker):
# rebuilt only when its pom or launcher changed.
ES_SOURCES := tests/elasticsearch/pom.xml $(shell find tests/elasticsearch/src -type f 2>/dev/null)
elasticsearch: $(ELASTICSEARCH_HOME)/.installed

$(ELASTICSEARCH_HOME)/.installed: $(ES_SOURCES)
	mvn -B -ntp -q -f tests/elasticsearch/pom.xml package
	rm -rf $(ELASTICSEARCH_HOME) && mkdir -p $(ELASTICSEARCH_HOME)
	cp -r tests/elasticsearch/target/home/. $(ELASTICSEARCH_HOME)/
	install -m 0644 tests/elasticsearch/target/elasticsearch-test-node.jar $(ELASTICSEARCH_HOME)/lib/
	touch $@

# axe-core for the accessibility checks of the browser tests, pinned by its lock file.
tests/ui/node_modules/.package-lock.json: tests/ui/package.json tests/ui/package-lock.json
	npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error

ui-deps: tests/ui/node_modules/.package-lock.json

# `helm` into $(HELM_HOME)/bin, rebuilt only when HELM_VERSION changes (a cold build takes
# minutes: see README).
helm:
	@if [ ! -x $(HELM_HOME)/bin/helm ] || [ "$$(cat $(HELM_HOME)/.version 2>/dev/null)" != $(HELM_VERSION) ]; then \
	  echo "building helm $(HELM_VERSION) from the Go module proxy into $(HELM_HOME)/bin"; \
	  mkdir -p $(HELM_HOME)/bin && \
	  GOBIN=$(HELM_HOME)/bin CGO_ENABLED=0 $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) && \
	  echo $(HELM_VERSION) > $(HELM_HOME)/.version; fi

# Azurite into $(AZURITE_HOME), reinstalled only when AZURITE_VERSION changes.
azurite:
	@if [ ! -x $(AZURITE_HOME)/node_modules/.bin/azurite-blob ] || [ "$$(cat $(AZURITE_HOME)/.version 2>/dev/null)" != $(AZURITE_VERSION) ]; then \
	  echo "installing azurite $(AZURITE_VERSION) into $(AZURITE_HOME)"; \
	  mkdir -p $(AZURITE_HOME) && \
	  npm install --prefix $(AZURITE_HOME) --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION) && \
	  echo $(AZURITE_VERSION) > $(AZURITE_HOME)/.version; fi

# Built from the Go module proxy once (about 20 min cold on 2 cores); the script skips the
# build when its stamp matches the pinned versions.
kube:
	KUBE_HOME=$(KUBE_HOME) tests/kube/build.sh

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared mlflow_server mlmanager bobby releases

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/unit

integration: system-deps plpython-deps mlrunner elasticsearch helm kube azurite $(VENV)/.installed-test
	MLRUNNER_JAR=$(MLRUNNER_HOME)/mlrunner.jar ELASTICSEARCH_HOME=$(ELASTICSEARCH_HOME) HELM=$(HELM_HOME)/bin/helm \
	  KUBE_HOME=$(KUBE_HOME) AZURITE=$(AZURITE_HOME)/node_modules/.bin/azurite-blob \
	  $(BIN)/python -m pytest tests/integration

e2e: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/e2e

ui: system-deps plpython-deps ui-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/ui

test: system-deps plpython-deps mlrunner elasticsearch helm kube azurite ui-deps $(VENV)/.installed-test lint
	MLRUNNER_JAR=$(MLRUNNER_HOME)/mlrunner.jar ELASTICSEARCH_HOME=$(ELASTICSEARCH_HOME) HELM=$(HELM_HOME)/bin/helm \
	  KUBE_HOME=$(KUBE_HOME) AZURITE=$(AZURITE_HOME)/node_modules/.bin/azurite-blob \
	  $(BIN)/python -m pytest tests

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,keras,spark,bench]'
	touch $@

bench: system-deps plpython-deps mlrunner $(VENV)/.installed-bench
	MLRUNNER_JAR=$(MLRUNNER_HOME)/mlrunner.jar $(BIN)/python -m tests.bench $(BENCH)

# Re-pin the whole dependency tree after changing pyproject.toml.
lock: $(VENV)/.installed-bench
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
