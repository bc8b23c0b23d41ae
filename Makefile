# The README's two commands: `make demo` (the main job on SQLite, nothing to start) and
# `make test` (the whole suite). Each creates .venv with what it needs when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -n 2 --dist loadgroup --durations=10

.PHONY: demo test lint bench clean venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,postgres,dask,notebooks]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/hwmarket demo --workdir demo-out

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check marketplace metering billing tests bench examples
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.catalog_import

clean:
	rm -rf demo-out .pytest_cache .mypy_cache .ruff_cache .hypothesis
