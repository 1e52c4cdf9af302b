# The two newcomer commands (README): `make demo` and `make test`. Both set everything up in a
# virtual environment first. `make demo` needs no root and no external server; `make test` also
# installs the programs the suite talks to (scripts/setup-system.sh) when run as root. Without
# PostgreSQL the store tests run on SQLite only and pytest says so in one line; .ci/run sets
# MAILER_TEST_POSTGRES=required so CI never leaves PostgreSQL out (=off leaves it out on purpose).
# `make playground` runs the whole service on loopback to click through, until Ctrl-C.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo playground test check bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/demo.py

playground: $(VENV)/.installed
	$(PY) scripts/playground.py

test: $(VENV)/.installed
	bash scripts/setup-system.sh
	$(VENV)/bin/ruff check mailer tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n 3

bench: $(VENV)/.installed
	$(PY) bench/inbox_bench.py
	$(PY) bench/campaign_bench.py

clean:
	rm -rf $(VENV) demo-run playground-run build dist
