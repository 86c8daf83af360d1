"""Peak memory of the ``sasa_blocks`` backend against sequence length: it must grow linearly.

Each (length, mode) runs in its own Python process (``sasa.profiling``), small model (hidden 256, 4 layers, 4 heads,
FFN 1024), batch 1, fp32, the default layout (block 32, window radius 1, 1 global block; no AST links or frequency
table in random inputs, so 3 + 1 key blocks per query block). RoBERTa with SDPA (full attention, a flash-style CPU
kernel) runs beside it as the peer.

    python benchmarks/memory.py                      # 2048 4096 8192 16384, train and infer
    python benchmarks/memory.py --lengths 2048 4096 --modes train --json out.json

``peak MB`` is the peak resident memory above the memory held just before the measured run (model, optimizer-free);
``MB / 1k tok`` divides it by the length: constant for linear growth.
"""

from __future__ import annotations

import argparse
import json
import sys

from sasa.profiling import measure_in_subprocess

PEERS = {
    "sasa_blocks": dict(model="sasa", backend="sasa_blocks"),
    "roberta_sdpa": dict(model="roberta", backend="sdpa"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--models", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after the measured one")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    rows = []
    print(f"{'mode':<6} {'model':<13} {'length':>7} {'peak MB':>9} {'MB / 1k tok':>12} {'x prev length':>14} "
          f"{'median ms':>10}")
    for mode in args.modes:
        for name in args.models:
            previous = None
            for length in args.lengths:
                row = measure_in_subprocess(dict(PEERS[name], length=length, mode=mode, repeats=args.repeats))
                row["name"] = name
                rows.append(row)
                if "error" in row:
                    print(f"{mode:<6} {name:<13} {length:>7} failed: {row['error']}")
                    previous = None
                    continue
                peak = row["peak_increment_mb"]
                growth = f"{peak / previous:.2f}" if previous else "-"
                print(f"{mode:<6} {name:<13} {length:>7} {peak:>9.0f} {1000 * peak / length:>12.1f} {growth:>14} "
                      f"{row['median_ms']:>10.0f}", flush=True)
                previous = peak
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
