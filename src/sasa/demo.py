"""``sasa demo``: the end-to-end demonstration run by ``make demo`` (CPU, offline, about a minute).

1. Build a small random RoBERTa, convert it to SASA with a longer position table, save it and reload it through
   ``AutoModel.from_pretrained(..., trust_remote_code=True)``.
2. Encode a long input (the UTF-8 bytes of a standard-library source file as token ids, until the AST tokenizer
   lands) and print the block layout's density.
3. Check the block-sparse kernel against the dense reference on that input.
4. Time and measure peak memory against full attention (RoBERTa, SDPA) of the same size, each in its own process.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile

import torch
from transformers import AutoModel, RobertaConfig, RobertaModel

from .conversion import convert_roberta_model
from .profiling import SMALL, measure_in_subprocess


def code_as_ids(length: int) -> torch.Tensor:
    """``[1, length]`` ids: ``<s>``, the bytes (+3) of argparse's source, ``</s>``. A stand-in for the BPE tokenizer."""
    source = inspect.getsource(argparse).encode("utf-8")
    while len(source) < length:
        source += source
    ids = torch.tensor([0] + [byte + 3 for byte in source[: length - 2]] + [2])
    return ids[None, :]


def run_demo(length: int = 4096, repeats: int = 3) -> None:
    torch.manual_seed(0)
    roberta = RobertaModel(RobertaConfig(vocab_size=300, max_position_embeddings=514, **SMALL)).eval()
    sasa = convert_roberta_model(roberta, max_position_embeddings=length + 2, head="base", num_random_blocks=0)
    with tempfile.TemporaryDirectory() as checkpoint:
        sasa.save_pretrained(checkpoint)
        model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    config = model.config
    print(f"SASA model: {type(model).__name__}, hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
          f"{config.num_attention_heads} heads, up to {config.max_sequence_length} tokens "
          f"(converted from a {roberta.config.max_position_embeddings - 2}-token RoBERTa, saved, reloaded)")

    input_ids = code_as_ids(length)
    layout = model.build_layout(torch.ones_like(input_ids), input_ids)
    print(f"input: {length} tokens (bytes of argparse.py), {layout.num_blocks} blocks of {config.block_size}")
    print(f"layout: window radius {config.window_radius}, {config.num_global_blocks} global block(s); "
          f"density {layout.density():.3f} of full attention (no AST links or frequency table in this demo)")

    with torch.no_grad():
        sparse = model(input_ids).last_hidden_state
        model.set_attn_implementation("eager")
        dense_reference = model(input_ids).last_hidden_state
    print(f"agreement: sasa_blocks vs dense reference under the same mask, max |diff| = "
          f"{(sparse - dense_reference).abs().max():.2e}")

    print(f"\n{'mode':<6} {'model':<22} {'median ms':>10} {'peak MB':>9}   vs full attention")
    for mode in ("infer", "train"):
        spec = dict(length=length, mode=mode, repeats=repeats, vocab_size=300)
        full = measure_in_subprocess(dict(spec, model="roberta", backend="sdpa"))
        ours = measure_in_subprocess(dict(spec, model="sasa", backend="sasa_blocks", layout=dict(num_random_blocks=0)))
        for name, row in (("RoBERTa (sdpa, full)", full), ("SASA (sasa_blocks)", ours)):
            if "error" in row:
                print(f"{mode:<6} {name:<22} failed: {row['error']}")
                continue
            ratio = ""
            if row is ours and "error" not in full:
                ratio = (f"   time x{row['median_ms'] / full['median_ms']:.2f}, "
                         f"memory x{row['peak_increment_mb'] / full['peak_increment_mb']:.2f}")
            print(f"{mode:<6} {name:<22} {row['median_ms']:>10.0f} {row['peak_increment_mb']:>9.0f}{ratio}")
