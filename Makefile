# Two commands set everything up on a fresh machine:  make demo  (the main job, offline)  and  make test.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: demo test unit test-all lint bench clean postgres chromium nginx deploy-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)  ## fit a synthetic line offline, evaluate it and score parts
	$(BIN)/lineguard demo

SOURCES := lineguard models registry training history deployments cluster cli benchmarks tests tools edge

lint: $(STAMP)  ## ruff, mypy (strict) and the import contracts of docs/architecture.md
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/python -m tools.typecheck
	$(BIN)/python -m tools.lint_imports

test: lint postgres chromium nginx deploy-tools  ## the test command CI runs (.ci/run): lint, types, then every suite not marked slow
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

unit: $(STAMP)  ## the unit run (under a minute): no Ray cluster, database server, browser or shared data
	$(BIN)/pytest -m "not integration and not slow" $(PYTEST_ARGS)

# The history tests start their own PostgreSQL server on loopback from Debian's binaries; as root on a
# Debian machine without them, this installs the postgresql package (the tests fail under CI without it).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ; } || \
	  echo "PostgreSQL is not installed and cannot be installed here: its tests will be skipped"

# The web page's tests drive Debian's Chromium with Playwright (never a browser Playwright downloads); as root
# on a Debian machine without it, this installs the chromium package (the tests are skipped without it).
chromium:
	@command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "Chromium is not installed and cannot be installed here: the web page's tests will be skipped"

# The TLS front's test (tests/integration/test_tls_front.py) runs Debian's nginx with deploy/nginx/lineguard.conf;
# as root on a Debian machine without it, this installs the nginx package (the test fails under CI without it).
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null) ; } || \
	  echo "nginx is not installed and cannot be installed here: the TLS front's test will be skipped"

# The checks of deploy/ run Debian's Prometheus (prometheus, promtool), docker-compose's `config` (no Docker
# daemon needed) and redis-server (GCS fault tolerance); as root on a Debian machine without them, this
# installs those packages.
deploy-tools:
	@{ command -v promtool && command -v docker-compose && command -v redis-server ; } >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus docker-compose redis-server >/dev/null) ; } || \
	  echo "Prometheus, docker-compose or redis-server is missing and cannot be installed here: their tests will be skipped"

test-all: lint postgres chromium nginx deploy-tools  ## every suite, slow ones included
	$(BIN)/pytest $(PYTEST_ARGS)

# The folder that holds the benchmark data sets (magnetic_tile/, battery_weld/; README "Benchmarks").
DATASETS ?= $(or $(LINEGUARD_DATASETS),../shared/datasets)

bench: $(STAMP)  ## image benchmarks beside anomalib on the real data sets in $(DATASETS)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.image_anomaly --data $(DATASETS)/battery_weld/welding --anomalib --anomalib-coreset 0.1
	$(BIN)/python -m benchmarks.image_anomaly --data $(DATASETS)/magnetic_tile --anomalib
	$(BIN)/python -m benchmarks.classifier --data $(DATASETS)/magnetic_tile --task binary

clean:
	rm -rf lineguard-demo lineguard-eval build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
