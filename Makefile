# The two commands the README opens with: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench setup docs screenshots

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

# The console's screenshots in the docs, taken by the browser test as it drives a live rollout
# and a gate abort (tests/etcd/test_console_browser.py).
screenshots: setup
	HOLDFAST_SCREENSHOTS=docs/operating/img $(PY) -m pytest -q tests/etcd/test_console_browser.py

# The documentation site into site/; --strict turns every warning (a broken link or anchor) into a
# failure. NO_MKDOCS_2_WARNING silences Material's banner about MkDocs 2.0, which is no warning.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict
