# `make main`: set up .venv, fine-tune all-MiniLM-L6-v2 with the card's recipe on SciFact, evaluate, report.
# `make test`: set up .venv, then lint, type-check and run the test suite.
.PHONY: setup main test lint bench
VENV := .venv
BIN := $(VENV)/bin

setup:
	bash scripts/setup.sh

main: setup
	$(BIN)/biencoder main --data ../shared/data --output runs/main

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q --durations=15

bench: setup
	$(BIN)/python benchmarks/encode.py
