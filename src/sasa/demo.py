"""``sasa demo``: the main job run by ``make demo`` (CPU, offline, a few minutes on 2 cores).

Fine-tunes a small SASA code-search model on real long code that needs no download, shares it as a Hub-ready
checkpoint and shows the reloaded checkpoint at work:

1. Data: documented functions of this Python's standard library (at least 1200 characters, about 300 tokens and up),
   the docstring cut out of the code and its first paragraph kept as the query; split by file (:mod:`stdlib_corpus`).
2. Tokenizer: a byte-level BPE trained on standard-library files (a stand-in for CodeBERT's vocabulary, which lives on
   the Hub), wrapped in a :class:`SasaTokenizer` that adds the code's AST links.
3. Model: a small :class:`SasaForCodeSearch` (bi-encoder) from random weights, its top-k source matching the
   tokenizer's identifiers; the untrained model's MRR on the test pool is the baseline the fine-tuned one must beat
   (:class:`DemoDidNotLearn` otherwise: ``sasa demo`` exits 1).
4. Fine-tuning with ``transformers.Trainer`` (in-batch softmax over query · code), then MRR on the test pool.
5. A checkpoint a user could push unchanged: config with ``auto_map``, code files, safetensors weights, tokenizer,
   a model card (``huggingface_hub.ModelCard``) and sentence-transformers' files (``SentenceTransformer(path,
   trust_remote_code=True)``: ``encode_query``/``encode_document``). Kept after the run.
6. Reload in a fresh Python in which ``import sasa`` fails (remote code, offline), check the vectors are identical,
   and print the top-3 functions the reloaded model retrieves for a few test queries.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from .configuration_sasa import SasaConfig
from .data_collator import SasaDataCollator
from .frequency import install_identifier_tokens
from .model_card import write_model_card
from .modeling_sasa import SasaForCodeSearch
from .retrieval import encode_texts, retrieval_mrr
from .sentence_transformers_files import save_sentence_transformers_files
from .stdlib_corpus import Function, documented_functions, split_by_file
from .tokenization_sasa import SasaTokenizer

#: The demo model: small enough to fine-tune in a few minutes on 2 CPU cores, long enough for long functions.
DEMO_MODEL = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                  max_position_embeddings=1026, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
MAX_CODE_TOKENS = 1024
#: Training functions have at least this many characters, test functions (the retrieval pool) at least TEST_MIN_CHARS
#: (about 300 tokens and up, half of them longer than 512 tokens); test files are never seen in training.
TRAIN_MIN_CHARS = 600
TEST_MIN_CHARS = 1200
MAX_QUERY_TOKENS = 64
ENCODE_BATCH = 16  # texts encoded at a time, in the demo and in its reload script alike


def stdlib_tokenizer(directory: str, files: int = 300, vocab_size: int = 8000) -> SasaTokenizer:
    """A RoBERTa-style BPE trained on standard-library Python files, saved to ``directory``."""
    from tokenizers import ByteLevelBPETokenizer

    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:files]
    trainer = ByteLevelBPETokenizer()
    trainer.train(paths, vocab_size=vocab_size, min_frequency=2, show_progress=False,
                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(directory)
    return SasaTokenizer.from_pretrained(directory, language="python")


class _DropLoadReport(logging.Filter):
    """Drops transformers' LOAD REPORT table (the demo prints a one-line summary of the same information)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def quiet_checkpoint_io() -> Iterator[None]:
    """Silence transformers' progress bars ("Writing model shards", "Loading weights") and its LOAD REPORT table
    while the demo saves and reloads its checkpoint; every other warning and error still shows. Restores both after."""
    bars_were_on = hf_logging.is_progress_bar_enabled()
    report_logger = hf_logging.get_logger("transformers.modeling_utils")
    drop_report = _DropLoadReport()
    hf_logging.disable_progress_bar()
    report_logger.addFilter(drop_report)
    try:
        yield
    finally:
        report_logger.removeFilter(drop_report)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def training_features(functions: list[Function], tokenizer: SasaTokenizer) -> list[dict]:
    """Code (with AST links) and query token lists per function, as :class:`SasaDataCollator` pads them."""
    code = tokenizer([f.code for f in functions], language="python", truncation=True, max_length=MAX_CODE_TOKENS)
    queries = tokenizer([f.docstring for f in functions], language=None, truncation=True,
                        max_length=MAX_QUERY_TOKENS)
    return [dict(input_ids=code["input_ids"][i], attention_mask=code["attention_mask"][i],
                 ast_links=code["ast_links"][i], query_input_ids=queries["input_ids"][i],
                 query_attention_mask=queries["attention_mask"][i]) for i in range(len(functions))]


def pool_mrr(model: SasaForCodeSearch, tokenizer: SasaTokenizer, test: list[Function]) -> tuple[float, torch.Tensor]:
    """MRR of every test query against the whole test pool, and the pool's code vectors."""
    code = encode_texts(model, tokenizer, [f.code for f in test], "python", MAX_CODE_TOKENS, ENCODE_BATCH)
    queries = encode_texts(model, tokenizer, [f.docstring for f in test], None, MAX_QUERY_TOKENS, ENCODE_BATCH)
    return retrieval_mrr(queries, code), code


class DemoDidNotLearn(RuntimeError):
    """Fine-tuning did not beat the untrained model: the main job failed (``sasa demo`` exits 1)."""


class _PrintLoss(TrainerCallback):
    """One line per logging step instead of a progress bar."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            print(f"  step {state.global_step:>4}/{state.max_steps}: training loss {logs['loss']:.3f}", flush=True)


RELOAD_PROCESS = textwrap.dedent(
    """
    import json, sys

    class NoSasa:  # a Python without the sasa package: the checkpoint's own code must do everything
        def find_spec(self, name, path=None, target=None):
            if name == "sasa" or name.startswith("sasa."):
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, NoSasa())
    import torch
    from transformers import AutoModelForTextEncoding, AutoTokenizer

    checkpoint, request = sys.argv[1], json.load(open(sys.argv[2]))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
    model = AutoModelForTextEncoding.from_pretrained(checkpoint, trust_remote_code=True).eval()

    def encode(texts, language, max_length):  # the batches of sasa.retrieval.encode_texts, the model's own encoder
        size = request["batch_size"]
        batches = (tokenizer(texts[start:start + size], language=language, truncation=True, max_length=max_length,
                             padding=True, pad_to_multiple_of=model.config.block_size, return_tensors="pt")
                   for start in range(0, len(texts), size))
        return model.encode_batches(batches)

    code = encode(request["code"], "python", request["max_code_tokens"])
    queries = encode(request["queries"], None, request["max_query_tokens"])
    scores = queries @ code.T
    top = scores.topk(3, dim=-1)
    right = torch.tensor(request["right"])
    ranks = 1 + (scores > scores.gather(1, right[:, None])).sum(1)  # where the right function came
    print(json.dumps(dict(module=type(model).__module__, code=code.tolist(), ranks=ranks.tolist(),
                          top=top.indices.tolist(), scores=top.values.tolist())))
    """
)


def reload_and_predict(checkpoint: str, test: list[Function], queries: list[int]) -> dict:
    """Load ``checkpoint`` in a fresh Python without the package (offline) and retrieve for the given test queries."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(dict(code=[f.code for f in test], queries=[test[i].docstring for i in queries], right=queries,
                       max_code_tokens=MAX_CODE_TOKENS, max_query_tokens=MAX_QUERY_TOKENS, batch_size=ENCODE_BATCH),
                  handle)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1")
    try:
        result = subprocess.run([sys.executable, "-c", RELOAD_PROCESS, checkpoint, handle.name], env=env,
                                capture_output=True, text=True, timeout=900)
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        raise RuntimeError(f"reloading {checkpoint} in a fresh process failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_demo(output_dir: str = "out/sasa-code-search-demo", max_steps: int = 300, seed: int = 0,
             train_limit: int | None = None, test_limit: int | None = None) -> dict:
    """The main job; returns its numbers (also printed). ``train_limit``/``test_limit`` keep the first functions only
    (a quick run of the same path, for tests)."""
    started = time.time()
    set_seed(seed)
    train, _ = split_by_file(documented_functions(min_chars=TRAIN_MIN_CHARS))
    _, test = split_by_file(documented_functions(min_chars=TEST_MIN_CHARS))
    train, test = train[:train_limit], test[:test_limit]
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = stdlib_tokenizer(scratch)
    lengths = sorted(len(ids) for ids in tokenizer([f.code for f in test], language=None)["input_ids"])
    long_share, median_tokens = sum(n > 512 for n in lengths) / len(lengths), lengths[len(lengths) // 2]
    print(f"data: documented functions of the Python {platform.python_version()} standard library, split by file: "
          f"{len(train)} for training (>= {TRAIN_MIN_CHARS} characters), {len(test)} long ones held out as the test "
          f"pool (>= {TEST_MIN_CHARS} characters: {median_tokens} tokens median, {long_share:.0%} longer than 512, cut "
          f"at {MAX_CODE_TOKENS}); code = the function without its docstring, query = the docstring's first paragraph")

    config = SasaConfig(vocab_size=len(tokenizer), **DEMO_MODEL)
    model = SasaForCodeSearch(config)
    install_identifier_tokens(model, tokenizer)
    print(f"model: SasaForCodeSearch from random weights ({config.pooling} pooling), hidden {config.hidden_size}, "
          f"{config.num_hidden_layers} layers, blocks of {config.block_size} (window radius {config.window_radius}, "
          f"{config.num_global_blocks} global, {config.num_topk_blocks} top-k block from the identifiers blocks share "
          f"and {config.num_ast_blocks} AST blocks per query block, AST links from tree-sitter)")
    baseline, _ = pool_mrr(model, tokenizer, test)
    chance = sum(1 / rank for rank in range(1, len(test) + 1)) / len(test)
    print(f"baseline: the untrained model's MRR on the {len(test)}-function test pool: {baseline:.3f} "
          f"(random ranking: {chance:.3f})")

    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, max_steps=max_steps, per_device_train_batch_size=8, learning_rate=1e-3,
            warmup_steps=max_steps // 10, weight_decay=0.01, logging_steps=max(1, max_steps // 6), save_strategy="no",
            report_to=[], disable_tqdm=True, seed=seed, dataloader_drop_last=True, dataloader_pin_memory=False,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=training_features(train, tokenizer),
                          data_collator=SasaDataCollator(tokenizer, pad_to_multiple_of=config.block_size),
                          callbacks=[_PrintLoss()])
        trainer.remove_callback(PrinterCallback)  # its raw log dicts: _PrintLoss prints one line instead
        print(f"fine-tuning: {max_steps} steps of 8 (query, function) pairs, in-batch softmax, Trainer on "
              f"{torch.get_num_threads()} CPU threads")
        hf_logging.set_verbosity_error()
        trainer.train()
        hf_logging.set_verbosity_warning()
    model = trainer.model.eval()
    mrr, code_vectors = pool_mrr(model, tokenizer, test)
    if not mrr > baseline:
        raise DemoDidNotLearn(f"result: test-pool MRR {mrr:.3f} after fine-tuning does NOT beat the untrained "
                              f"baseline {baseline:.3f}: the model did not learn (no checkpoint saved)")
    print(f"result: test-pool MRR {mrr:.3f} after fine-tuning, beats the untrained baseline {baseline:.3f}")

    os.makedirs(output_dir, exist_ok=True)
    tokenizer.model_max_length = config.max_sequence_length  # saved with it: where truncation must cut
    with quiet_checkpoint_io():
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    save_sentence_transformers_files(model, output_dir, max_query_length=MAX_QUERY_TOKENS)  # sentence-transformers
    write_model_card(
        model, output_dir, task="code-search", dataset_name="python-stdlib-docstrings", language="python",
        data_description=(f"Documented functions of the Python {platform.python_version()} standard library: "
                          f"{len(train)} for training (at least {TRAIN_MIN_CHARS} characters), {len(test)} long ones "
                          f"(at least {TEST_MIN_CHARS} characters, {long_share:.0%} longer than 512 tokens) from other "
                          "files held out as the retrieval pool. The query is the docstring's first paragraph; the "
                          "docstring is removed from the code. A demonstration of the SASA package's code-search "
                          "head, not a model for real use: it is tiny and trained for minutes on 2 CPU cores."),
        metrics={"mrr": mrr, "mrr_untrained_baseline": baseline},
        usage="vectors = model.encode(**inputs)  # [1, hidden]: rank code by dot product with encoded queries",
    )
    files = sorted(os.listdir(output_dir))
    print(f"checkpoint: {os.path.abspath(output_dir)} ({', '.join(files)})")

    shown = [0, len(test) // 3, 2 * len(test) // 3]  # a fixed choice, whatever the model ranks well
    reloaded = reload_and_predict(output_dir, test, shown)
    difference = (torch.tensor(reloaded["code"]) - code_vectors).abs().max().item()
    print(f"reloaded in a fresh Python without the sasa package ({reloaded['module'].rsplit('.', 1)[0]}): code vectors "
          f"max |diff| = {difference:.1e} from the fine-tuned model")
    print("\npredictions of the reloaded model (top 3 of the test pool per query):")
    for query, top, scores, rank in zip(shown, reloaded["top"], reloaded["scores"], reloaded["ranks"]):
        print(f"  query: {test[query].docstring[:100]!r}\n  (the right function, {test[query].path}:{test[query].name}, "
              f"ranks {rank} of {len(test)})")
        for rank, (index, score) in enumerate(zip(top, scores), start=1):
            mark = "  <- the right function" if index == query else ""
            print(f"    {rank}. {test[index].path}:{test[index].name} ({score:.1f}){mark}")
    print(f"\ndone in {time.time() - started:.0f} s; the checkpoint is kept in {os.path.abspath(output_dir)} "
          "(push it with huggingface_hub's upload_folder or model.push_to_hub)")
    return dict(baseline_mrr=baseline, mrr=mrr, reload_max_difference=difference, checkpoint=output_dir)
