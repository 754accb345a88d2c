# kbackup developer entry points. `make demo` and `make test` work on a fresh Debian 12 machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: all sysdeps venv test test-fast lint demo bench clean

all: test

sysdeps:
	@scripts/sysdeps.sh

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: sysdeps $(BIN)/.installed

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy


test: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/pytest -ra $(PYTEST_ARGS)

# The unit layer only (no PostgreSQL, no daemon, no network): seconds, not minutes.
test-fast: venv
	$(BIN)/pytest -q tests/unit

demo: venv
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

-include packaging/deb.mk
