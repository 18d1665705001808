# better-tensorflow: `make run` starts the server, `make test` runs every test.
# Both create .venv and install the pinned requirements first (nothing else needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint data models bench bench-serve install install-dev install-bench browser wrk clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-bench: $(VENV)/.installed-bench

# Debian's Chromium for the page tests (never a browser downloaded by a test tool).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Builds data/mnist_preprocessed.npz when raw MNIST is found (data/raw/ or $$MNIST_DIR);
# a no-op when it is up to date.
data: install
	$(PY) preprocess.py

run: install
	@$(PY) preprocess.py --if-available
	$(PY) server.py --host $(HOST) --port $(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .

test: install-dev browser lint
	$(PY) -m pytest

models: install
	$(PY) models/build.py

bench: install-bench
	$(PY) bench/train.py

# Debian's wrk, the load generator of bench/serve.py (without it, an asyncio client is used).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing Debian's wrk for the load test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
	  || echo "wrk could not be installed: bench/serve.py uses its asyncio client"

# Load test of the HTTP API on loopback (see README, "Robustness, security and scaling out").
bench-serve: install-dev wrk
	$(PY) bench/serve.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache screenshots
