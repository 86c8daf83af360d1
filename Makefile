# One command each: `make demo` (the main job) and `make test` (the test suite). Both install what they need into the
# project's own environment (.venv, created on first use from whatever Python the machine has, reused afterwards):
# nothing is installed into the system's or the user's Python.
#   PYTHON      the interpreter .venv is created from (default: python3, else python)
#   VENV        where the environment lives (default: .venv)
#   TORCH_SPEC  the torch requirement, installed first (default: the CPU wheel torch==2.13.0; a bare `torch`
#               requirement on a machine without torch pulls a multi-GB CUDA build)
#   LOWEST_VENV `make test`'s second environment (default: .venv-lowest): every direct dependency at the lower bound
#               that setup.cfg declares (scripts/lowest-constraints), for the tests in LOWEST_TESTS
PYTHON ?=
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# The environment's bin first on PATH: the fused kernel's build finds the environment's ninja, not only a system one.
RUN = HF_HUB_OFFLINE=1 PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/python
LOWEST_VENV ?= .venv-lowest
# Everything that exercises a dependency (tree-sitter grammars, the Hub upload, matplotlib, datasets, accelerate,
# sentence-transformers, ...), without the slow ones that add nothing here (torch.compile, the kernel build cases,
# the example and demo training runs). The fused kernel is compiled afresh with this environment's ninja.
LOWEST_TESTS = tests/test_tokenization_sasa.py tests/test_modeling.py tests/test_remote_code.py tests/test_heads.py \
	tests/test_pipelines.py tests/test_training.py tests/test_ast_relations.py tests/test_block_layout.py \
	tests/test_configuration.py tests/test_conversion.py tests/test_data_collator.py tests/test_frequency.py \
	tests/test_hub_upload.py tests/test_metrics.py tests/test_sparse_attention.py tests/test_visualize.py \
	tests/test_examples_validation.py \
	tests/test_examples_retrieval_generation.py::test_code_search_output_loads_in_sentence_transformers_with_ast_links
LOWEST_RUN = HF_HUB_OFFLINE=1 PATH="$(abspath $(LOWEST_VENV))/bin:$$PATH" \
	TORCH_EXTENSIONS_DIR="$(abspath $(LOWEST_VENV))/torch-extensions" $(LOWEST_VENV)/bin/python

.PHONY: install install-lowest demo test test-lowest lint bench

install:
	@scripts/project-python "$(PYTHON)" "$(VENV)" >/dev/null
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -e ".[test]"

demo: install
	$(RUN) -m sasa.cli demo

install-lowest:
	@scripts/project-python "$(PYTHON)" "$(LOWEST_VENV)" >/dev/null
	$(LOWEST_VENV)/bin/python scripts/lowest-constraints > "$(LOWEST_VENV)/constraints.txt"
	$(LOWEST_VENV)/bin/python -m pip install -q -c "$(LOWEST_VENV)/constraints.txt" "$(TORCH_SPEC)"
	$(LOWEST_VENV)/bin/python -m pip install -q -c "$(LOWEST_VENV)/constraints.txt" -e ".[test]"

# The whole suite, then LOWEST_TESTS with the lowest declared versions; fails if either fails.
test: install install-lowest
	@status=0; \
	$(RUN) -m pytest -q tests || status=1; \
	echo "== make test: again with every dependency at its lowest declared version ($(LOWEST_VENV)/constraints.txt)"; \
	$(LOWEST_RUN) -m pytest -q $(LOWEST_TESTS) || status=1; \
	exit $$status

test-lowest: install-lowest
	$(LOWEST_RUN) -m pytest -q $(LOWEST_TESTS)

lint: install
	$(VENV)/bin/python -m ruff check src tests benchmarks

bench: install
	$(RUN) benchmarks/speed/run.py --quick --json benchmarks/results/quick.json --png benchmarks/results/quick
