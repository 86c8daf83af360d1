# One command each: `make demo` (the main job) and `make test` (the test suite). Both install what they need into the
# project's own environment (.venv, created on first use from whatever Python the machine has, reused afterwards):
# nothing is installed into the system's or the user's Python.
#   PYTHON      the interpreter .venv is created from (default: python3, else python)
#   VENV        where the environment lives (default: .venv)
#   TORCH_SPEC  the torch requirement, installed first (default: the CPU wheel torch==2.13.0; a bare `torch`
#               requirement on a machine without torch pulls a multi-GB CUDA build)
PYTHON ?=
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
RUN = HF_HUB_OFFLINE=1 $(VENV)/bin/python

.PHONY: install demo test lint bench

install:
	@scripts/project-python "$(PYTHON)" "$(VENV)" >/dev/null
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[test]"

demo: install
	$(RUN) -m sasa.cli demo

test: install
	$(RUN) -m pytest -q tests

lint: install
	$(VENV)/bin/python -m ruff check src tests benchmarks

bench: install
	$(RUN) benchmarks/run.py --quick --json benchmarks/results/quick.json --png benchmarks/results/quick
