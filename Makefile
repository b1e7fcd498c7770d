# Everything a fresh machine needs: `make bench` runs the main job, `make test` the tests.
# Each creates its own virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bench test lint clean

$(VENV)/.installed-%: pyproject.toml setup.py src/winipc/_native/_ring.c src/winipc/_native/_xstore.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$*]'
	touch $@

# the main job compares winipc with its peers (pyzmq, faster-fifo): install them too
bench: $(VENV)/.installed-bench,peers
	$(VENV)/bin/winipc bench $(ARGS)

# the tests run the bench's peers and plots as well
lint: $(VENV)/.installed-dev,bench,peers
	$(PY) -m ruff check src tests
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info
