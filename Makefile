# Common tasks. PYTHON is the interpreter of the environment with the test and lint extras:
#   make test PYTHON=/path/to/.venv/bin/python
PYTHON ?= .venv/bin/python
PYTEST = PYTHONPATH=src $(PYTHON) -m pytest

.PHONY: help test integration_tests lint format snapshots benchmark lowest

help:  ## List the targets.
	@grep -E '^[a-z_]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

test:  ## Unit tests: fake models, no network, about a minute.
	$(PYTEST) tests/unit_tests

integration_tests:  ## Real HTTP on loopback, the CLI as a process, the local models.
	$(PYTEST) tests/integration_tests

lint:  ## ruff check, ruff format --check, mypy and the import layers, changing nothing.
	$(PYTHON) -m ruff check src tests benchmarks examples graphs
	$(PYTHON) -m ruff format --check src tests benchmarks examples graphs
	$(PYTHON) -m mypy
	PYTHONPATH=src $(PYTHON) -c "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"

format:  ## Fix what ruff can fix and format the code.
	$(PYTHON) -m ruff check --fix src tests benchmarks examples graphs
	$(PYTHON) -m ruff format src tests benchmarks examples graphs

snapshots:  ## Accept changed graph and schema snapshots (review the diff!).
	$(PYTEST) tests/unit_tests/test_snapshots.py --snapshot-update

benchmark:  ## Orchestration overhead against bare asyncio (CPU-sensitive: run it on a quiet machine).
	PYTHONPATH=src $(PYTHON) benchmarks/orchestration_overhead.py

lowest:  ## Unit tests with every direct dependency at its declared minimum (the serve extra's apart), in a fresh .venv-lowest.
	rm -rf .venv-lowest && python3 -m venv .venv-lowest
	.venv-lowest/bin/pip install -q -c constraints-lowest.txt -e ".[local,test]"
	PYTHONPATH=src .venv-lowest/bin/python -m pytest -q -p no:cacheprovider tests/unit_tests
	.venv-lowest/bin/pip install -q -c constraints-lowest.txt -r constraints-lowest-serve.txt
	PYTHONPATH=src .venv-lowest/bin/python -m pytest -q -p no:cacheprovider tests/unit_tests
