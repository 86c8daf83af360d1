"""What building the block layout costs next to the forward pass it serves.

For each length: a small SASA model (hidden 256, 4 layers, 4 heads, FFN 1024; ``sasa_blocks``; inference, batch 1,
fp32) with its default layout over CodeBERT's vocabulary size, random ids from a working set of 1,000 ids (names
recur, as in code), and random AST links (2 per token). With ``--topk-source table`` the model gets a random frequency
table of ``--partners`` partners per id instead of the default input source. Timed separately (median of
``--repeats``), each through the model's own code:

* ``top-k scores``: the model's top-k source (``SasaFrequencyTable.block_scores``),
* ``AST scores``: ``ast_block_scores`` from the links,
* ``layout``: ``SasaModel.layout`` (all patterns, the two above included) + the kv indices,
* ``forward``: the whole model forward (which includes the layout).

    python benchmarks/speed/layout_cost.py --lengths 1024 2048 4096 8192 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def median_ms(function, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@torch.inference_mode()
def measure_length(length: int, topk_source: str, partners: int, repeats: int) -> dict:
    from sasa import SasaConfig, SasaModel
    from sasa.block_layout import ast_block_scores
    from sasa.profiling import SMALL, WORKING_SET

    vocab = 50265
    torch.manual_seed(0)
    config = SasaConfig(vocab_size=vocab, max_position_embeddings=length + 2, **SMALL)
    model = SasaModel._from_config(config, attn_implementation="sasa_blocks").eval()
    if topk_source == "table":
        generator = torch.Generator().manual_seed(0)
        model.set_frequency_table(torch.randint(0, vocab, (vocab, partners), generator=generator),
                                  torch.rand(vocab, partners, generator=generator))
    generator = torch.Generator().manual_seed(length)
    input_ids = torch.randint(3, 3 + WORKING_SET, (1, length), generator=generator)
    ast_links = torch.randint(-1, length, (1, length, 2), generator=generator)
    valid = torch.ones_like(input_ids, dtype=torch.bool)
    row = dict(
        length=length,
        topk_source=topk_source,
        topk_ms=median_ms(lambda: model.frequency_table.block_scores(input_ids, valid, config), repeats),
        ast_ms=median_ms(lambda: ast_block_scores(ast_links, config.block_size, config.ast_reverse_weight), repeats),
        layout_ms=median_ms(lambda: model.layout(input_ids, ast_links=ast_links).kv_indices, repeats),
        forward_ms=median_ms(lambda: model(input_ids, ast_links=ast_links), repeats),
    )
    row["layout_share"] = row["layout_ms"] / row["forward_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--topk-source", choices=["input", "table"], default="input")
    parser.add_argument("--partners", type=int, default=32, help="partners per id of the random table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'length':>7} {'top-k scores':>13} {'AST scores':>11} {'layout':>8} {'forward':>9} {'layout share':>13}")
    for length in args.lengths:
        row = measure_length(length, args.topk_source, args.partners, args.repeats)
        rows.append(row)
        print(f"{length:>7} {row['topk_ms']:>11.1f}ms {row['ast_ms']:>9.1f}ms {row['layout_ms']:>6.1f}ms "
              f"{row['forward_ms']:>7.0f}ms {100 * row['layout_share']:>12.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
