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
import os
import sysconfig
import tempfile

import torch
from transformers import AutoModel, AutoTokenizer, RobertaConfig, RobertaModel

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


def run_demo(length: int = 4096, repeats: int = 3) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = stdlib_tokenizer(scratch)
        roberta = RobertaModel(RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=514, **SMALL)).eval()
        sasa = convert_roberta_model(roberta, max_position_embeddings=length + 2, head="base")
        checkpoint = os.path.join(scratch, "sasa-demo")
        sasa.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=True)
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

    with torch.no_grad():
        sparse = model(**inputs).last_hidden_state
        model.set_attn_implementation("eager")
        dense_reference = model(**inputs).last_hidden_state
    print(f"agreement: sasa_blocks vs dense reference under the same mask, max |diff| = "
          f"{(sparse - dense_reference).abs().max():.2e}")

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
