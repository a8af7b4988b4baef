.PHONY: install test lint bench

install:
	pip install -e '.[dev]'

test:
	python -m pytest

lint:
	ruff check selfinstruct tests benchmarks
	ruff format --check selfinstruct tests benchmarks
	mypy

bench:
	python benchmarks/novelty.py
