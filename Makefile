# better-tensorflow: `make run` starts the server, `make test` runs every test.
# Both create .venv and install the pinned requirements first (nothing else needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint data mnist models bench bench-serve bench-inference bench-nets docker install install-dev install-bench browser wrk clean

# The project installs itself (pyproject.toml), its pins read from the requirements files.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-bench: $(VENV)/.installed-bench

# Debian's Chromium for the page tests (never a browser downloaded by a test tool).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Raw MNIST is looked for in $$MNIST_DIR, then data/raw/ (preprocess.find_mnist).
# data: builds data/mnist_preprocessed.npz from it (a no-op when up to date).
data: install
	$(PY) preprocess.py

# mnist: fetches the raw files (checksummed) into data/raw/ when none are found; offline, it
# says so in one line and the tests that need them skip.
mnist: install
	@$(PY) preprocess.py --fetch-if-missing

run: install
	@$(PY) preprocess.py --if-available
	$(PY) server.py --host $(HOST) --port $(PORT)

lint: install-dev
	$(VENV)/bin/ruff check .

test: install-dev browser lint mnist
	$(PY) -m pytest

models: install
	$(PY) -m models.test_images
	$(PY) -m models.build

bench: install-bench
	$(PY) -m bench.train

# Debian's wrk, the load generator of bench/serve.py (without it, an asyncio client is used).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing Debian's wrk for the load test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
	  || echo "wrk could not be installed: bench/serve.py uses its asyncio client"

# Load test of the HTTP API on loopback (see README, "Robustness, security and scaling out").
bench-serve: install-dev wrk
	$(PY) -m bench.serve

# Rows/s through the Open Inference Protocol (/v2/.../infer) at batches 1, 100, 1000 vs /predict.
bench-inference: install-dev
	$(PY) -m bench.inference

# 30 clients training nets of their own at once; memory of 1,000 nets (docs/performance.md).
bench-nets: install-dev
	$(PY) -m bench.nets

# The container image (needs a container engine; docs/operations.md, "Containers").
docker:
	docker build -t better-tensorflow .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache screenshots *.egg-info
