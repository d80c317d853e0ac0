# One vocabulary for developers, CI and the README: run, test, lint, bench.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run check test lint bench postgres chromium clean

# Stamps re-run the install whenever pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server,agents]'
	touch $@

$(VENV)/.dev-deps: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.run-deps
	$(BIN)/chatledger serve --dev --host $(HOST) --port $(PORT)

# The test suite needs the local PostgreSQL cluster; start it if it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; echo "PostgreSQL did not start"; exit 1

# The browser tests drive Debian's Chromium, never a downloaded browser; install it if missing.
chromium:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

# Tests run in parallel: each worker has its own SQLite files and PostgreSQL database
# (tests/conftest.py) and takes whole files, so a module's browser or server starts once.
# More workers than cores, because many tests wait on processes, browsers and sleeps.
JOBS ?= 3
# Bytecode caches on, even where the environment turns them off: otherwise every test
# process compiles the sources again, and pytest rewrites ~440 modules in every worker.
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest
PARALLEL := -n $(JOBS) --dist loadfile

# The quick loop while changing code: all but the slow tests (processes, browsers,
# 100,000-message cases), with a tenth of the Hypothesis examples.
check: $(VENV)/.dev-deps postgres
	$(PYTEST) $(PARALLEL) -m "not slow and not alone" --hypothesis-profile=check

# Tests marked `alone` bound a server's answer in time under load they make themselves:
# they run after the others, when nothing else competes for the 2 cores.
test: $(VENV)/.dev-deps postgres chromium
	$(PYTEST) $(PARALLEL) -m "not alone"
	$(PYTEST) -m alone

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

bench: $(VENV)/.dev-deps postgres
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
