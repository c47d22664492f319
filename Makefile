# Set-up and everyday commands. Everything installs into .venv (created on first use).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-deps test-install lint bench

# setuptools notes every editable install of a package with a mapped folder (conf/ ->
# buttermilk.conf) as a warning; it is information only, so the install stays quiet.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The main job on the embedded default: create a batch of the example comparison (the
# sentiment flow under two VADER thresholds) over the bundled reviews, work it in this
# process, print its status, export the results, and score each threshold against the
# reviews' labels.
demo: install
	$(PY) -m buttermilk.runner.cli ui=batch flow=sentiment_thresholds batch.wait=true batch.output=results.jsonl
	$(PY) -m buttermilk.runner.cli ui=batch batch.command=report

# What the tests need beyond Python packages: headless Chromium and its driver (Debian's
# packages) for the dashboard's browser test. Installed when missing, as root; otherwise
# the command to run is printed. PostgreSQL and the Pub/Sub emulator: see .ci/run.
test-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "error: the dashboard test needs chromium and chromedriver: run sudo apt-get install -y chromium chromium-driver" >&2; \
			exit 1; \
		fi; \
		echo "installing chromium and chromium-driver (Debian packages) for the dashboard test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

# The tests' real model server (the llm-server extra): llama-cpp-python builds from source
# (about 5 minutes of 2 cores), so its wheel is built once into $(LLAMA_WHEELS), outside
# the clone, and every later install (a fresh clone, a new .venv) takes it from there.
# Built for AVX2, not -march=native: the native build's AVX-512/AMX kernels crash
# (SIGSEGV in the first decode) on this kind of VM, whose CPUs report AMX.
# `make install` and `make demo` never build it.
WHEELS ?= $(HOME)/.cache/buttermilk/wheels
LLAMA_CPP := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_WHEELS := $(WHEELS)/llama-cpp-$(LLAMA_CPP)-avx2

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP)-*.whl >/dev/null 2>&1 || { \
		echo "building llama-cpp-python $(LLAMA_CPP) once into $(LLAMA_WHEELS) (about 5 minutes)"; \
		CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
			$(PY) -m pip wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) \
			'llama-cpp-python==$(LLAMA_CPP)'; }
	PYTHONWARNINGS=ignore::UserWarning $(PY) -m pip install -q --find-links $(LLAMA_WHEELS) \
		--only-binary llama-cpp-python -e '.[dev,llm-server]'
	touch $@

test-install: $(VENV)/.installed-test

test: test-install test-deps
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/core.py
