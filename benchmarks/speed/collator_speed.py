"""Milliseconds per batch of ``SasaDataCollator`` before and after padding ``ast_links`` with tensor operations.

*Before*: every field, ``ast_links`` included, padded by ``SasaTokenizer.pad`` (Python lists, token by token), as the
collator did until it got :func:`sasa.data_collator.pad_links`. *After*: the collator as it is. Both run in the
process that feeds the model (a ``Trainer``'s main process unless ``dataloader_num_workers > 0``), once per step.

Features are real code: Python files of this interpreter's standard library, encoded with AST links (a byte-level
BPE trained here on the same files), cut to a random length between half and all of the batch's length, as nested
lists (what ``datasets`` returns). Both outputs are checked equal.

    python benchmarks/speed/collator_speed.py                      # 16 x 1024 and 32 x 2048, JSON to docs/benchmarks/
    python benchmarks/speed/collator_speed.py --shapes 8x512 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import statistics
import sys
import sysconfig
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "..", "..", "docs", "benchmarks", "collator-speed.json")


def stdlib_texts(count: int) -> list[str]:
    """The ``count`` longest-first Python files of the standard library (long enough to fill 2048 tokens)."""
    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    texts = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            texts.append(handle.read())
    texts.sort(key=len, reverse=True)
    return texts[:count]


def make_tokenizer(texts: list[str], directory: str):
    from tokenizers import ByteLevelBPETokenizer

    from sasa import SasaTokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(texts, vocab_size=2000, min_frequency=2, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(directory)
    return SasaTokenizer.from_pretrained(directory)


def features(encoded: dict, batch: int, length: int, seed: int) -> list[dict]:
    """``batch`` features cut from the encoded files to random lengths in ``[length / 2, length]``."""
    generator = random.Random(seed)
    rows = []
    for index in range(batch):
        source = index % len(encoded["input_ids"])
        cut = min(len(encoded["input_ids"][source]), generator.randint(length // 2, length))
        rows.append({key: list(encoded[key][source][:cut]) for key in ("input_ids", "attention_mask", "ast_links")})
    return rows


def time_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="16x1024,32x2048", help="batch x length pairs, comma-separated")
    parser.add_argument("--repeats", type=int, default=15, help="batches timed per shape and version (median)")
    parser.add_argument("--json", default=DEFAULT_JSON, help="where to write the results ('' for nowhere)")
    args = parser.parse_args(argv)

    from sasa.data_collator import SasaDataCollator

    shapes = [tuple(int(x) for x in shape.split("x")) for shape in args.shapes.split(",")]
    longest = max(length for _, length in shapes)
    texts = stdlib_texts(48)
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = make_tokenizer(texts, directory)
        encoded = tokenizer(texts, language="python", truncation=True, max_length=longest)
    collator = SasaDataCollator(tokenizer, pad_to_multiple_of=32)

    results = []
    for batch, length in shapes:
        rows = features(encoded, batch, length, seed=batch * length)

        def before(rows=rows):
            return tokenizer.pad([dict(row) for row in rows], padding=True, pad_to_multiple_of=32, return_tensors="pt")

        def after(rows=rows):
            return collator([dict(row) for row in rows])

        old, new = before(), after()
        for key in ("input_ids", "attention_mask", "ast_links"):
            if not torch.equal(old[key], new[key]):
                raise SystemExit(f"the collators disagree on {key} at {batch} x {length}")
        row = dict(batch=batch, length=length, padded_length=int(new["input_ids"].shape[1]),
                   relations=int(new["ast_links"].shape[-1]),
                   before_ms=round(time_ms(before, args.repeats), 2), after_ms=round(time_ms(after, args.repeats), 2))
        row["speedup"] = round(row["before_ms"] / row["after_ms"], 1)
        results.append(row)
        print(f"{batch:>3} x {length:<5} before (tokenizer.pad, Python lists) {row['before_ms']:8.2f} ms/batch   "
              f"after (tensor padding) {row['after_ms']:8.2f} ms/batch   {row['speedup']}x", flush=True)

    if args.json:
        report = dict(benchmark="collator_speed", torch=torch.__version__, python=sys.version.split()[0],
                      cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), repeats=args.repeats,
                      results=results)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
