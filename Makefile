# meshwire: every target sets up its own .venv; nothing needs installing by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest test-tools bench bench-tools clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m proxy.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) test-tools
	$(BIN)/pytest -q

# promtool (Debian's prometheus package) lints the admin port's /stats/prometheus.
test-tools:
	@command -v promtool >/dev/null \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)

test: lint typecheck pytest

bench-tools:
	@command -v nginx >/dev/null && command -v haproxy >/dev/null && command -v wrk >/dev/null \
	  && command -v h2load >/dev/null && command -v hey >/dev/null \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      nginx-light haproxy wrk nghttp2-client hey)

bench: $(STAMP) bench-tools
	bash bench/run.sh
	$(BIN)/python bench/tracing.py
	$(BIN)/python bench/sidecar.py
	$(BIN)/python bench/state.py
	$(BIN)/python bench/pubsub.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
