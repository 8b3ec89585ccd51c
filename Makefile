# VM-X gateway. `make run` is all a newcomer needs; see README.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install dev run serve test check format keys clean

# Runtime dependencies only: what scripts and production need.
install: $(VENV)/.runtime
$(VENV)/.runtime: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required ($(PYTHON) is older; try make PYTHON=python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Runtime plus test, lint and type-check tools.
dev: $(VENV)/.dev
$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

keys: install
	$(BIN)/python -m vmx_project.devkeys

run: keys
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py vmx_bootstrap
	$(BIN)/gunicorn -c gunicorn.conf.py

test: dev
	$(BIN)/python -m pytest

check: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

format: dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (bench/README.md): the gateway beside a fake nginx upstream; bench-peers adds Portkey.
# Installs nginx-light, libnginx-mod-http-echo and wrk with apt-get when missing (root), Portkey
# into .tools/. Writes docs/benchmarks.md. Extra options: make bench BENCH_ARGS='--quick'.
BENCH_ARGS ?=

.PHONY: bench bench-peers bench-profile bench-compare

bench: install
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-peers: install
	$(BIN)/python bench/run.py --peers $(BENCH_ARGS)

# py-spy one gateway worker under chat c=64 load; prints the top frames (needs py-spy on PATH or
# PY_SPY=/path/to/py-spy; e.g. python3 -m venv /tmp/spy && /tmp/spy/bin/pip install py-spy).
PY_SPY ?= py-spy
PROFILE_ARGS ?=
bench-profile: install
	$(BIN)/python bench/run.py profile --py-spy $(PY_SPY) $(PROFILE_ARGS)

# The working tree (uncommitted changes included) against BASE, interleaved rounds; prints a Markdown
# table for the commit message, writes nothing under docs/. E.g. make bench-compare BASE=HEAD~1
# BENCH_ARGS='--scenarios chat --rounds 5'.
BASE ?= HEAD
bench-compare: install
	$(BIN)/python bench/run.py compare --base '$(BASE)' $(BENCH_ARGS)
