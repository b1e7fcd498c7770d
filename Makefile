# Everything a fresh machine needs: `make bench` runs the main job, `make test` the tests.
# Each creates its own virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bench test lint clean

$(VENV)/.installed-%: pyproject.toml setup.py src/winipc/_native/_ring.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

bench: $(VENV)/.installed-bench
	$(VENV)/bin/winipc bench $(ARGS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check src tests
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
