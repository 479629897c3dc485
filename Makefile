# Two commands set everything up on a fresh machine:  make demo  (the main job, offline)  and  make test.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)  ## fit a synthetic line offline, evaluate it and score parts
	$(BIN)/lineguard demo

lint: $(STAMP)
	$(BIN)/ruff check models training deployments benchmarks tests
	$(BIN)/mypy

test: lint  ## the test command CI runs (.ci/run): lint, types, then every suite not marked slow
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-all: lint  ## every suite, slow ones included
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)  ## image benchmark beside anomalib on the shared data (needs ../shared/datasets)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.image_anomaly --data ../shared/datasets/battery_weld/welding --anomalib --anomalib-coreset 0.1
	$(BIN)/python -m benchmarks.image_anomaly --data ../shared/datasets/magnetic_tile --anomalib
	$(BIN)/python -m benchmarks.classifier --data ../shared/datasets/magnetic_tile --task binary

clean:
	rm -rf lineguard-demo lineguard-eval .pytest_cache .mypy_cache .ruff_cache
