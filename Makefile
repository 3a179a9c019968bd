# `make run` serves the API on the embedded stores; `make test` runs the whole suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint typecheck check bench bench-smoke clean

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

# The second pass runs the API and integration suites on PostgreSQL and Redis (from
# WICKSON_TEST_POSTGRES_URL / WICKSON_TEST_REDIS_URL; without them it skips, under CI=true it
# fails): `eval "$$(scripts/test-servers start)"` starts both.
test: $(VENV)/.dev
	$(BIN)/pytest
	WICKSON_TEST_BACKEND=server $(BIN)/pytest tests/api tests/integration

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

check: lint typecheck test

# The benchmark (README "Performance"): HTTP against the in-process floor, 10k and 100k media.
# `make bench SIZES=10000,100000 BENCH_ARGS="--million --out f.json"`; `make bench-smoke`: tiny.
bench: $(VENV)/.runtime
	$(BIN)/python bench/harness.py $(if $(SIZES),--sizes $(SIZES)) $(BENCH_ARGS)

bench-smoke: $(VENV)/.runtime
	$(BIN)/python bench/harness.py --smoke $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info  # never ./var: that is data
