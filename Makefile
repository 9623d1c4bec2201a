# Everything a developer or CI needs; each target sets up the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck test-python test-native bench bench-check asv clean

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres,langgraph]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m snapstate.demo

lint: venv
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

typecheck: venv
	$(PY) -m mypy

test-python: venv
	SNAPSTATE_IMPL=python $(PY) -m pytest $(PYTEST_ARGS)

test-native: venv
	SNAPSTATE_IMPL=native $(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck test-python test-native

clean:
	rm -rf $(VENV) build src/*.egg-info src/snapstate/codec/_native*.so ext/*.c
