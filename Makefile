# ufl: `make run` (venv + install + the whole pipeline on built-in images) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= work
STAMP := $(VENV)/.installed
# The full MNIST and Fashion-MNIST for the tests, when a shared data folder sits beside the clone (tests that
# need them skip without it).
SHARED_DATA := $(wildcard ../shared/data)
TEST_ENV := $(if $(SHARED_DATA),UFL_DATASETS="$(abspath $(SHARED_DATA))",)

.PHONY: run test test-fast bench venv clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/ufl run --workdir $(WORKDIR)

test: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -ra --durations=15

test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(WORKDIR) *.egg-info
