# The two commands the README opens with: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench setup

setup:
	@scripts/bootstrap.sh

demo: setup
	@$(PY) -m holdfast_devtools.demo

test: setup
	@$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-logo

bench: setup
	$(PY) -m bench.overhead
