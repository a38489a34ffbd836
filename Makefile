# Every target sets up what it needs: a fresh machine with only Python can run `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The development and CI copy of the data, when it sits beside the checkout.
export HERITAGE_DATA ?= $(abspath $(wildcard ../shared/datasets/ahe64))

.PHONY: install demo test lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install  ## the main job: check the data, train, evaluate; figures in runs/demo
	$(BIN)/heritage demo --out runs/demo

test: install lint  ## the whole test suite (tiny models, synthetic data; integration tests use $HERITAGE_DATA)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install  ## speed and accuracy benchmarks against plain baselines; writes benchmarks/results.md
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
