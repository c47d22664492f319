# Set-up and everyday commands. Everything installs into .venv (created on first use).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: create a batch of the example flow over the
# bundled reviews, work it in this process, print its status, export the results.
demo: install
	$(PY) -m buttermilk.runner.cli ui=batch flow=sentiment batch.wait=true batch.output=results.jsonl

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/core.py
