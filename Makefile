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
# What each long step does and about how long it takes, printed before it (pip itself is quiet meanwhile).
say = @printf '\n==> %s\n' "$(1)"
VENV_STEP = Creating the virtual environment $(VENV) and upgrading pip in it (about 10 s)
DEMO_INSTALL_STEP = Installing inferd and the demo's frameworks (onnxruntime, scikit-learn, XGBoost, LightGBM) \
	into $(VENV): about 1-2 minutes and 700 MB the first time, seconds after
DEMO_STEP = Training the example models and starting the server (about 10-20 s); Ctrl-C stops it
TEST_INSTALL_STEP = Installing inferd with every extra and the test tools (torch, Ray, tritonclient, ...) into \
	$(VENV): a few minutes and about 2.5 GB the first time, seconds after

.PHONY: demo test check lint typecheck bench fuzz venv clean

$(BIN)/python:
	$(call say,$(VENV_STEP))
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

venv: $(BIN)/python

demo: $(BIN)/python
	$(call say,$(DEMO_INSTALL_STEP))
	$(PIP) -e '.[demo]'
	$(COMPILE)
	$(call say,$(DEMO_STEP))
	$(BIN)/inferd demo $(DEMO_ARGS)

test: $(BIN)/python
	bash scripts/system_deps.sh
	$(call say,$(TEST_INSTALL_STEP))
	$(PIP) -e '.[all,dev]'
	$(COMPILE)
	$(MAKE) --no-print-directory check

check: lint typecheck
	$(call say,Running the test suite (several minutes))
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
