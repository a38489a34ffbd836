# Every target sets up what it needs: a fresh machine with only Python can run `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The development and CI copy of the data, when it sits beside the checkout.
export HERITAGE_DATA ?= $(abspath $(wildcard ../shared/datasets/ahe64))

.PHONY: install demo test test-avx2 test-bf16 lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install  ## the main job: check the data, train, evaluate; figures in runs/demo
	$(BIN)/heritage demo --out runs/demo

# The tests whose numbers depend on the CPU's kernels: run a second time with the instruction set capped at AVX2
# (PyTorch's own kernels, oneDNN's convolutions, and so no bf16 autocast), so an Intel machine with AVX-512 and bf16
# shows what an AMD EPYC or a laptop will. On a CPU that is AVX2 already the second pass would be the same run.
NUMERICS_TESTS := tests/inside/test_synthesis.py tests/inside/test_deconvnet.py tests/models/test_ensemble.py tests/training/test_loop.py \
	tests/inside/test_explain.py tests/inside/test_sanity.py tests/base/test_devices.py
AVX2_CAP := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
ABOVE_AVX2 := $(BIN)/python -c 'import sys, torch; sys.exit(torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT"))'
# And the other way: on a CPU without bf16, the tests of what predictions compute (the classifier, evaluation, the
# none-of-these fit, the model format, the commands and the server) again with the library's bf16 autocast forced
# on (tests/conftest.py's --bf16-autocast; PyTorch emulates bf16), so an AMD EPYC sees what a Xeon with bf16 will.
BF16_TESTS := tests/inference tests/models tests/apps

test: install lint  ## the whole test suite (tiny models, synthetic data; integration tests use $HERITAGE_DATA)
	$(BIN)/python -m pytest -q
	@if $(ABOVE_AVX2); then echo "== the numerics-sensitive tests again, as an AVX2 CPU computes them ($(AVX2_CAP))"; \
		$(AVX2_CAP) $(BIN)/python -m pytest -q $(NUMERICS_TESTS); \
	else echo "== the prediction tests again, as a CPU with bf16 computes them (--bf16-autocast)"; \
		$(BIN)/python -m pytest -q --bf16-autocast $(BF16_TESTS); fi

test-avx2: install  ## only the numerics-sensitive tests, as an AVX2 CPU computes them, on any CPU
	$(AVX2_CAP) $(BIN)/python -m pytest -q $(NUMERICS_TESTS)

test-bf16: install  ## only the prediction tests, as a CPU with bf16 in hardware computes them, on any CPU
	$(BIN)/python -m pytest -q --bf16-autocast $(BF16_TESTS)

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
