# Two commands do everything on a fresh Linux machine with Python 3.11:
#   make demo   set up .venv, train the example models, serve them and show predictions
#   make test   set up .venv with every extra, then lint, type-check and run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# An editable install leaves the package's own modules uncompiled, where pip compiles a wheel's at install; where
# PYTHONDONTWRITEBYTECODE is set they were compiled again at every start (a tenth of a second of cold start).
COMPILE := $(BIN)/python -m compileall -q src

.PHONY: demo test check lint typecheck bench fuzz venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

venv: $(BIN)/python

demo: $(BIN)/python
	$(PIP) -e '.[demo]'
	$(COMPILE)
	$(BIN)/inferd demo $(DEMO_ARGS)

test: $(BIN)/python
	$(PIP) -e '.[all,dev]'
	$(COMPILE)
	$(MAKE) --no-print-directory check

check: lint typecheck
	$(BIN)/pytest

lint:
	$(BIN)/ruff check src tests benchmarks scripts

typecheck:
	$(BIN)/mypy

# The long fuzz run (the test suite runs a short one): hypothesis on the codecs, schemathesis on a real server.
fuzz: $(BIN)/python
	HYPOTHESIS_PROFILE=long INFERD_FUZZ_SECONDS=600 $(BIN)/pytest tests/fuzz -p no:cacheprovider

bench: $(BIN)/python
	$(BIN)/python benchmarks/serve_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-models .pytest_cache .mypy_cache .ruff_cache
