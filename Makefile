# Two entry points for a fresh machine: `make demo` (main job) and `make test` (the suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo test test-fast bench promtool clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo]'
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

test: $(STAMP) promtool
	$(PY) -m pytest -q $(ARGS)

# The inner loop: no broker, no subprocesses, no long runs (the markers are in pyproject.toml).
test-fast: $(STAMP) promtool
	$(PY) -m pytest -q -m "not broker and not slow" $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) demo-report .adae-cache build *.egg-info
