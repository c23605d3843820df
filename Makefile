# meshwire: every target sets up its own .venv from uv.lock; nothing needs installing by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv lives in a venv of its own, installed by pip from .ci/uv.txt (one version, hash-checked).
TOOLS := .tools
UV := $(TOOLS)/bin/uv
LATEST := .venv-latest
# Only the interpreter this machine has: never a Python downloaded by uv.
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint typecheck pytest test-tools test-latest lock fuzz bench bench-tools clean

$(UV): .ci/uv.txt
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip --isolated install -q --disable-pip-version-check --require-hashes -r .ci/uv.txt
	touch $(UV)

# Exactly what uv.lock pins (--locked: refuse a lock that no longer matches pyproject.toml).
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync -q --locked --extra dev --python $(PY)
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

# The whole suite on the newest releases within pyproject.toml's bounds, ignoring the lock, in a
# venv of its own made fresh each time (its stamp is touched so the sub-make does not re-sync).
test-latest: $(UV) test-tools
	rm -rf $(LATEST)
	$(UV) venv -q --python $(PY) $(LATEST)
	$(UV) pip install -q --python $(LATEST)/bin/python --upgrade -e '.[dev]'
	$(UV) pip list -q --python $(LATEST)/bin/python --format freeze > $(LATEST)/versions.txt
	touch $(LATEST)/.installed
	$(MAKE) --no-print-directory lint typecheck pytest BIN=$(LATEST)/bin STAMP=$(LATEST)/.installed

# The fuzz suite at length (make test runs the same tests short and repeatable); FUZZ_EXAMPLES per
# test, new random examples each run, failures kept in .hypothesis/ and printed as a blob to replay.
FUZZ_EXAMPLES ?= 3000
fuzz: $(STAMP)
	MESHWIRE_FUZZ=long MESHWIRE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider tests/fuzz

# Re-resolve every pin to the newest releases pyproject.toml allows (review the diff, run make test).
lock: $(UV)
	$(UV) lock --upgrade --python $(PY)

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
	$(BIN)/python bench/rss.py

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
