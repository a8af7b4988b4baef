.PHONY: install test lint bench

install:
	pip install -e '.[dev]'

test:
	python -m pytest

lint:
	ruff check selfinstruct tests benchmarks tools
	ruff format --check selfinstruct tests benchmarks
	mypy
	lint-imports

bench:
	python benchmarks/novelty.py
