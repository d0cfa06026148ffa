# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo test test-fast lint bench promtool clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tensorflow,test,demo]'
	touch $(STAMP)

promtool:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package (provides prometheus + promtool)"; \
	  (apt-get install -y -q prometheus >/dev/null 2>&1 || sudo -n apt-get install -y -q prometheus >/dev/null 2>&1 || \
	   { (apt-get update -q >/dev/null 2>&1 || sudo -n apt-get update -q >/dev/null 2>&1); \
	     apt-get install -y -q prometheus >/dev/null 2>&1 || sudo -n apt-get install -y -q prometheus >/dev/null 2>&1; }) ; \
	  command -v promtool >/dev/null || { echo "ERROR: promtool not found and Debian's prometheus package could not be installed"; exit 1; }; }

demo: $(STAMP)
	$(VENV)/bin/adae-stream demo $(ARGS)

# Lint, format and types first (seconds), then the whole suite.
test: $(STAMP) promtool lint
	$(PY) -m pytest -q $(ARGS)

# The inner loop: tests/fast/ (no broker, no subprocesses, no long runs), on up to 4 cores.
test-fast: $(STAMP) promtool
	$(PY) -m pytest -q tests/fast -n auto --maxprocesses 4 --dist worksteal $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) demo-report .adae-cache build *.egg-info
