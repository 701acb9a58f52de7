# ember: `make run` trains the default recipe on bundled data; `make test` runs the whole suite.
# Both set up .venv from nothing (Python 3.11, pip and make are all they need).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
CORE := $(VENV)/.installed-core
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# `make run` needs only the core package; `make test` adds every extra and the dev tools.
$(CORE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	$(PIP) torch==2.13.0          # first, pinned: the CPU build, never a multi-GB CUDA one
	$(PIP) -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(PIP) -e ".[dev]"
	touch $(STAMP)

run: $(CORE)
	$(VENV)/bin/ember train configs/digits-cnn.yaml
	$(VENV)/bin/ember eval latest --split test
	$(VENV)/bin/ember runs

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks examples conftest.py
	$(VENV)/bin/ruff check src tests benchmarks examples conftest.py
	$(VENV)/bin/mypy

test: $(STAMP) lint
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=25

bench: $(STAMP)
	$(PIP) -e ".[bench]"
	$(PY) benchmarks/engine_overhead.py
	$(PY) benchmarks/time_to_accuracy.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
