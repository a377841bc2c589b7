# hsflowd in Python.  `make install` as root sets up the agent; `make test` runs every test.
PYTHON ?= python3
VENV_PY = .venv/bin/python

.PHONY: install deps test bench clean

install:
	sh packaging/install.sh

deps:
	sh .ci/deps

test: deps
	$(VENV_PY) -m pytest -q tests

bench: deps
	for b in bench/bench_*.py; do echo "== $$b"; $(VENV_PY) $$b || exit 1; done

clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
