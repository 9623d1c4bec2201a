# Everything a developer or CI needs; each target sets up the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck test-python test-native test-oldest test-newest bench bench-check asv build-ext clean

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=77"
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

# The suite on the oldest Python (3.10, where installed) and the oldest dependencies that
# pyproject.toml allows, pinned in .ci/oldest.txt, in .venv-oldest; and the codec's and the
# LangGraph savers' tests on the newest Python installed (3.13, else 3.12), in .venv-newest.
# CI runs both after `make test` (see .ci/lane).
test-oldest:
	PYTEST_ARGS="$(PYTEST_ARGS)" .ci/lane oldest

test-newest:
	PYTEST_ARGS="$(PYTEST_ARGS)" .ci/lane newest

# A quick pytest-benchmark run of the hot paths: ratio tables against LangGraph's savers and
# docs/bench-per-step.png. BENCH_ARGS are passed to pytest (e.g. BENCH_ARGS="-k storage").
bench: venv
	$(PY) -m benchmarks.run $(BENCH_ARGS)

# CI's regression check: fails when a ratio against the anchors drops below its floor.
bench-check: venv
	$(PY) -m benchmarks.check

# The ASV suites on this environment; results are kept in benchmarks/results.
asv: venv
	$(PY) -m asv machine --yes >/dev/null
	$(PY) -m asv run --python=same --quick --set-commit-hash=$$(git rev-parse HEAD) $(ASV_ARGS)

# Rebuild the Cython twin in place after editing ext/ (make venv does it on install).
build-ext: venv
	$(PY) ext/build_inplace.py

clean:
	rm -rf $(VENV) .venv-oldest .venv-newest build src/*.egg-info src/snapstate/codec/_native*.so src/snapstate/backends/_*_native*.so ext/*.c
