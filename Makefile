# One command each: `make demo` (the main job) and `make test` (the test suite). Both install what they need.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU wheel of torch must come first: a bare `torch` requirement on a machine without torch pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint bench

install:
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"

demo: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m sasa.cli demo

test: install
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q tests

lint: install
	$(PYTHON) -m ruff check src tests benchmarks

bench: install
	HF_HUB_OFFLINE=1 $(PYTHON) benchmarks/run.py --quick --json benchmarks/results/quick.json --png benchmarks/results/quick
