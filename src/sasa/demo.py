"""``sasa demo``: the end-to-end demonstration run by ``make demo`` (CPU, offline, about a minute).

1. Train a small byte-level BPE vocabulary on standard-library Python files (a stand-in for CodeBERT's vocabulary,
   which needs the Hub) and wrap it in a :class:`SasaTokenizer`.
2. Build a small random RoBERTa, convert it to SASA with a longer position table, save model + tokenizer, and reload
   both through ``AutoModel``/``AutoTokenizer.from_pretrained(..., trust_remote_code=True)``.
3. Tokenize a long real file (``argparse.py``) with its AST links and print the block layout's density per pattern.
4. Check the block-sparse kernel against the dense reference on that input.
5. Time and measure peak memory against full attention (RoBERTa, SDPA) of the same size, each in its own process.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel
from transformers.utils import logging as hf_logging

from .conversion import convert_roberta_model
from .profiling import SMALL, measure_in_subprocess
from .tokenization_sasa import SasaTokenizer
from .visualize import pattern_counts


def stdlib_tokenizer(directory: str, files: int = 150, vocab_size: int = 8000) -> SasaTokenizer:
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


def reload_problems(loading_info: dict) -> str:
    """``""`` if a reload restored every weight, else the keys it did not (what the LOAD REPORT would have listed)."""
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
    return "; ".join(f"{kind.replace('_', ' ')}: {sorted(map(str, loading_info[kind]))}"
                     for kind in kinds if loading_info.get(kind))


def save_and_reload(model, tokenizer: SasaTokenizer, checkpoint: str):
    """Save model + tokenizer to ``checkpoint`` and load both back as remote code (quietly; a lossy reload is said)."""
    with quiet_checkpoint_io():
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        model, loading_info = AutoModel.from_pretrained(checkpoint, trust_remote_code=True, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
    problems = reload_problems(loading_info)
    if problems:
        print(f"warning: the reloaded checkpoint does not match the saved model: {problems}")
    return model.eval(), tokenizer


def print_agreement(model, inputs) -> None:
    """Run the block-sparse kernel and the dense reference ("eager") on ``inputs`` and print how far apart they are."""
    kernel = model.config._attn_implementation
    with torch.no_grad():
        sparse = model(**inputs).last_hidden_state
        model.set_attn_implementation("eager")
        if model.config._attn_implementation != "eager":
            print(f"agreement: NOT CHECKED: set_attn_implementation('eager') left the model on "
                  f"{model.config._attn_implementation!r}, so there is no dense reference to compare with")
            return
        dense_reference = model(**inputs).last_hidden_state
    print(f"agreement: {kernel} vs dense reference under the same mask, max |diff| = "
          f"{(sparse - dense_reference).abs().max():.2e}")


def run_demo(length: int = 4096, repeats: int = 3) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = stdlib_tokenizer(scratch)
        roberta = RobertaModel(RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514, **SMALL)).eval()
        sasa = convert_roberta_model(roberta, max_position_embeddings=length + 2, head="base")
        model, tokenizer = save_and_reload(sasa, tokenizer, os.path.join(scratch, "sasa-demo"))
    config = model.config
    print(f"SASA model: {type(model).__name__}, hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
          f"{config.num_attention_heads} heads, up to {config.max_sequence_length} tokens (converted from a "
          f"{roberta.config.max_position_embeddings - 2}-token RoBERTa; model and tokenizer saved and reloaded as "
          f"remote code)")

    with open(argparse.__file__, encoding="utf-8") as handle:
        source = handle.read()
    inputs = tokenizer(source, language="python", truncation=True, max_length=length, return_tensors="pt")
    layout = model.layout(inputs["input_ids"], inputs["attention_mask"], inputs["ast_links"])
    counts = ", ".join(f"{name} {count}" for name, count in pattern_counts(layout).items() if count)
    print(f"input: argparse.py, {inputs['input_ids'].shape[1]} tokens, {layout.num_blocks} blocks of "
          f"{config.block_size}; AST links: {int((inputs['ast_links'] >= 0).sum())}")
    print(f"layout: density {layout.density():.3f} of full attention; block pairs by pattern: {counts} "
          "(no frequency table in this demo: top-k needs a pretrained teacher, see `sasa topk`)")

    print_agreement(model, inputs)

    print(f"\n{'mode':<6} {'model':<22} {'median ms':>10} {'peak MB':>9}   vs full attention")
    for mode in ("infer", "train"):
        spec = dict(length=length, mode=mode, repeats=repeats, vocab_size=len(tokenizer))
        full = measure_in_subprocess(dict(spec, model="roberta", backend="sdpa"))
        ours = measure_in_subprocess(dict(spec, model="sasa", backend="sasa_blocks", ast_links_per_token=4))
        for name, row in (("RoBERTa (sdpa, full)", full), ("SASA (sasa_blocks)", ours)):
            if "error" in row:
                print(f"{mode:<6} {name:<22} failed: {row['error']}")
                continue
            ratio = ""
            if row is ours and "error" not in full:
                ratio = (f"   time x{row['median_ms'] / full['median_ms']:.2f}, "
                         f"memory x{row['peak_increment_mb'] / full['peak_increment_mb']:.2f}")
            print(f"{mode:<6} {name:<22} {row['median_ms']:>10.0f} {row['peak_increment_mb']:>9.0f}{ratio}")
