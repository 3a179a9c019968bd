# `make run` serves the API on the embedded stores; `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint typecheck check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python requirements.txt setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime

# Not echoed: with LOG_FORMAT=json (the default) everything it prints is a JSON line.
run: $(VENV)/.runtime
	@$(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

test: $(VENV)/.dev
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

check: lint typecheck test

# A quick latency figure: 100-id batches over HTTP against gunicorn on a seeded store.
bench: $(VENV)/.runtime
	$(BIN)/python bench/batch_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info  # never ./var: that is data
