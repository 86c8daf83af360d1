"""The benchmark suite: SASA against RoBERTa, BigBird and Longformer from transformers, in one run.

Every configuration runs in its own Python process (``sasa.profiling``): random weights, batch 1, fp32, median of
``--repeats`` timed runs after one first run, which also gives the peak memory (resident set above the resting one)
and the warm-up/compile time (reported apart). SASA uses its default layout (``SasaConfig``: block 32, window radius
1, 1 global block, 1 top-k block from the tokens blocks share, 2 AST blocks per query block), built by the model's
own code from random inputs whose ids recur (a working set of 1,000 ids) and random AST links, so every budget is
spent; ``sasa_compiled`` is the same model under ``torch.compile`` (its first run includes the
compilation). Peers: RoBERTa (``sdpa``: PyTorch's flash-style CPU kernel; ``eager``), BigBird
(``block_sparse``, block 64, 3 random blocks) and Longformer (window 512, ``<s>`` global).

    python benchmarks/speed/run.py --quick                       # a few minutes: small model, 1024 and 4096 tokens
    python benchmarks/speed/run.py                               # 512 ... 16384 tokens, small and base (base <= 4096)
    python benchmarks/speed/run.py --json out.json --png out     # also write rows + targets, and out-time.png/out-memory.png

The table gives each row's median time, first-run time, peak memory and, for SASA rows, the time ratio to each peer
at the same length, mode and size. The attention-only section times the attention function alone (12 heads, head
dim 64, at least 9 timed runs) and prints its GFLOP/s on the blocks it computes next to this machine's dense matmul
GFLOP/s, timed in the same process after each of its runs (this host's speed drifts with other tenants' load, and
the kernel's more than matmul's, so a yardstick taken minutes apart would decide the throughput target by the
drift). The run ends with the project's targets, each marked met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from sasa.profiling import matmul_gflops, measure_in_subprocess

#: model rows: name → (spec, largest length it is run at (O(L^2) references stop early), modes it supports)
MODELS = {
    "sasa_blocks": (dict(model="sasa", backend="sasa_blocks"), None, ("infer", "train")),
    "sasa_compiled": (dict(model="sasa", backend="sasa_blocks", compile=True), None, ("infer", "train")),
    "sasa_flex": (dict(model="sasa", backend="flex_attention"), None, ("infer",)),  # no CPU backward in torch
    "sasa_sdpa_dense_mask": (dict(model="sasa", backend="sdpa"), 4096, ("infer", "train")),
    "roberta_sdpa": (dict(model="roberta", backend="sdpa"), None, ("infer", "train")),
    "roberta_eager": (dict(model="roberta", backend="eager"), 4096, ("infer", "train")),
    "bigbird": (dict(model="bigbird"), None, ("infer", "train")),
    "longformer": (dict(model="longformer"), None, ("infer", "train")),
}
ATTENTION = {
    "sasa_blocks": dict(backend="sasa_blocks"),
    "flex_attention": dict(backend="flex_attention"),
    "sdpa_dense_mask": dict(backend="sdpa"),
    "dense_sdpa": dict(backend="dense_sdpa"),
}
PEERS = ("roberta_sdpa", "bigbird", "longformer")
#: attention-only rows are cheap: at least this many timed runs, so one slow run (or the allocator settling in the
#: first ones) does not decide their median
ATTENTION_REPEATS = 9
SASA_STRUCTURE = dict(ast_links_per_token=2)


@dataclass
class Plan:
    sizes: list[str]
    lengths: list[int]
    base_max_length: int
    models: list[str]
    modes: list[str]
    attention_lengths: list[int]
    attention_backends: list[str]
    memory_lengths: list[int]  # extra sasa_blocks train lengths for the linear-memory target


def plan_from(args: argparse.Namespace) -> Plan:
    if args.quick:
        plan = Plan(["small"], [1024, 4096], 0, ["sasa_blocks", "roberta_sdpa", "bigbird", "longformer"],
                    ["infer", "train"], [4096], ["sasa_blocks", "dense_sdpa"], [16384])
    else:
        plan = Plan(["small", "base"], [512, 1024, 2048, 4096, 8192, 16384], 4096, list(MODELS), ["infer", "train"],
                    [1024, 4096, 16384], list(ATTENTION), [])
    for field in ("sizes", "lengths", "models", "modes"):
        if getattr(args, field):
            setattr(plan, field, getattr(args, field))
    if args.no_attention:
        plan.attention_lengths = []
    if args.attention_only:
        plan.sizes, plan.memory_lengths = [], []
    if args.attention_lengths:
        plan.attention_lengths = args.attention_lengths
    return plan


def specs(plan: Plan, repeats: int):
    for size in plan.sizes:
        for length in plan.lengths:
            if size == "base" and length > plan.base_max_length:
                continue
            for name in plan.models:
                spec, longest, modes = MODELS[name]
                if longest is not None and length > longest:
                    continue
                for mode in plan.modes:
                    if mode in modes:
                        extra = SASA_STRUCTURE if spec["model"] == "sasa" else {}
                        yield dict(spec, **extra, name=name, size=size, length=length, mode=mode, repeats=repeats)
    for length in plan.memory_lengths:
        yield dict(MODELS["sasa_blocks"][0], **SASA_STRUCTURE, name="sasa_blocks", size="small", length=length,
                   mode="train", repeats=1)
    for length in plan.attention_lengths:
        for name in plan.attention_backends:
            if name == "sdpa_dense_mask" and length > 4096:
                continue
            for mode in plan.modes:
                if name == "flex_attention" and mode == "train":
                    continue
                yield dict(ATTENTION[name], model="attention", name=name, size="attention", length=length,
                           mode=mode, repeats=max(repeats, ATTENTION_REPEATS))


def find(rows, **match):
    for row in rows:
        if "error" not in row and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def print_table(rows: list[dict]) -> None:
    print(f"\n{'size':<9} {'mode':<6} {'length':>6}  {'model':<22} {'median ms':>10} {'first ms':>9} {'peak MB':>8}  "
          "time vs peers")
    for row in rows:
        label = f"{row['size']:<9} {row['mode']:<6} {row['length']:>6}  {row['name']:<22}"
        if "error" in row:
            print(f"{label} failed: {row['error'][:80]}")
            continue
        ratios = ""
        if row["name"].startswith("sasa") and row["size"] != "attention":
            parts = []
            for peer in PEERS:
                other = find(rows, name=peer, size=row["size"], mode=row["mode"], length=row["length"])
                if other:
                    parts.append(f"{peer} x{row['median_ms'] / other['median_ms']:.2f}")
            ratios = ", ".join(parts)
        if row["size"] == "attention":
            ratios = f"{row['gflops']:.0f} GFLOP/s on computed blocks"
            if row.get("matmul_gflops"):
                ratios += f" ({row['gflops'] / row['matmul_gflops']:.2f} of matmul timed alongside)"
            dense = find(rows, name="dense_sdpa", size="attention", mode=row["mode"], length=row["length"])
            if dense and row["name"] != "dense_sdpa":
                ratios += f", dense_sdpa x{row['median_ms'] / dense['median_ms']:.2f}"
        print(f"{label} {row['median_ms']:>10.0f} {row['first_ms']:>9.0f} {row['peak_increment_mb']:>8.0f}  {ratios}")


def targets(rows: list[dict], matmul: float) -> list[dict]:
    """The project's targets (issue 4) that this run's rows can decide."""
    checks = []

    def ratio(name, peer, mode, length, size="small"):
        ours = find(rows, name=name, size=size, mode=mode, length=length)
        other = find(rows, name=peer, size=size, mode=mode, length=length)
        return ours["median_ms"] / other["median_ms"] if ours and other else None

    def check(label, value, limit):
        if value is not None:
            checks.append(dict(target=label, value=round(value, 3), limit=limit, met=value <= limit))

    check("attention 4096: forward / dense SDPA", ratio("sasa_blocks", "dense_sdpa", "infer", 4096, "attention"), 0.20)
    check("attention 4096: forward+backward / dense SDPA",
          ratio("sasa_blocks", "dense_sdpa", "train", 4096, "attention"), 0.30)
    for mode, limits in (("infer", (0.5, 0.4)), ("train", (0.6, 0.5))):
        check(f"small model 4096 {mode}: / RoBERTa sdpa", ratio("sasa_blocks", "roberta_sdpa", mode, 4096), limits[0])
        for peer in ("bigbird", "longformer"):
            check(f"small model 4096 {mode}: / {peer}", ratio("sasa_blocks", peer, mode, 4096), limits[1])
        check(f"small model 1024 {mode}: / RoBERTa sdpa", ratio("sasa_blocks", "roberta_sdpa", mode, 1024), 1.0)
    at_4096 = find(rows, name="sasa_blocks", size="small", mode="train", length=4096)
    at_16384 = find(rows, name="sasa_blocks", size="small", mode="train", length=16384)
    if at_4096 and at_16384:
        check("train memory: peak increment 16384 / 4096", at_16384["peak_increment_mb"] / at_4096["peak_increment_mb"],
              4.5)
    sparse = find(rows, name="sasa_blocks", size="attention", mode="infer", length=4096)
    if sparse:  # against the matmul timed in the same process, between the kernel's own runs, where there is one
        share = sparse["gflops"] / sparse.get("matmul_gflops", matmul)
        checks.append(dict(target="attention 4096: computed-block GFLOP/s / dense matmul GFLOP/s",
                           value=round(share, 3), limit=0.6, met=share >= 0.6))
    return checks


def plot(rows: list[dict], prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric, label in (("median_ms", "median time (ms)"), ("peak_increment_mb", "peak memory above rest (MB)")):
        groups = sorted({(r["size"], r["mode"]) for r in rows if "error" not in r})
        figure, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
        for axis, (size, mode) in zip(axes[0], groups):
            names = sorted({r["name"] for r in rows if r["size"] == size and r["mode"] == mode and "error" not in r})
            for name in names:
                points = sorted((r["length"], r[metric]) for r in rows
                                if r["size"] == size and r["mode"] == mode and r["name"] == name and "error" not in r)
                axis.plot(*zip(*points), marker="o", label=name)
            axis.set(title=f"{size}, {mode}", xlabel="tokens", ylabel=label, xscale="log", yscale="log")
            axis.legend(fontsize=7)
        figure.tight_layout()
        path = f"{prefix}-{'time' if metric == 'median_ms' else 'memory'}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model at 1024 and 4096 tokens (a few minutes)")
    parser.add_argument("--sizes", nargs="+", choices=["small", "base"])
    parser.add_argument("--lengths", nargs="+", type=int)
    parser.add_argument("--models", nargs="+", choices=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=["infer", "train"])
    parser.add_argument("--no-attention", action="store_true", help="skip the attention-only rows")
    parser.add_argument("--attention-only", action="store_true", help="only the attention-only rows")
    parser.add_argument("--attention-lengths", type=int, nargs="+", help="lengths of the attention-only rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="seconds before one configuration is given up")
    parser.add_argument("--json", help="write rows, targets and the matmul yardstick to this file")
    parser.add_argument("--png", help="write PREFIX-time.png and PREFIX-memory.png")
    args = parser.parse_args(argv)

    plan = plan_from(args)
    matmul = matmul_gflops()
    print(f"dense fp32 matmul on this machine: {matmul:.0f} GFLOP/s")
    rows = []
    for spec in specs(plan, args.repeats):
        try:
            row = measure_in_subprocess(spec, timeout=args.timeout)
        except Exception as error:  # a timeout: keep the rest of the run
            row = dict(spec, error=f"{type(error).__name__}: {error}")
        rows.append(row)
        status = row.get("error") or f"{row['median_ms']:.0f} ms, {row['peak_increment_mb']:.0f} MB"
        print(f"  {spec['size']:<9} {spec['mode']:<6} {spec['length']:>6} {spec['name']:<22} {status}", flush=True)
    print_table(rows)
    checks = targets(rows, matmul)
    print("\ntargets")
    for check in checks:
        print(f"  {'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']} (limit {check['limit']})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(dict(matmul_gflops=matmul, rows=rows, targets=checks), handle, indent=2)
    if args.png:
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        plot(rows, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
