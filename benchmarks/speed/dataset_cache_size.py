"""Disk taken by the tokenized data sets of the example scripts: 1,000 functions of 1,024 tokens, saved as Arrow.

Two ways of storing the same ``datasets.map`` output, the AST links (per token, one index per relation, -1 for none)
being most of it:

* ``before``: a plain ``dataset.map(tokenize)``, as the scripts did: ``datasets`` stores the links as nested lists of
  ``int64`` (8 bytes per link, plus a 4-byte list offset per token);
* ``after``: ``examples/common.py``'s ``tokenize_splits``, which all four scripts use: ``int16`` links (``int32``
  beyond 32,768 tokens) in a fixed-size list per token (2 bytes per link, no offsets).

Data: real functions of this Python's standard library (:func:`sasa.stdlib_corpus.documented_functions`, docstrings
removed) with at least ``--max-length`` tokens, cut at ``--max-length`` and repeated in order to ``--rows`` rows, so
every row has exactly ``--max-length`` tokens. Tokenizer: a byte-level BPE trained on standard-library files
(:func:`sasa.demo.stdlib_tokenizer`) with Python AST links, the default relations. Preprocessing: the scripts' own,
one function per row (defect detection, code search's code side) and a pair of functions per row (clone detection:
``[2][L][R]`` links). Sizes: the Arrow files ``save_to_disk`` writes, which is what ``datasets`` caches; and the
``ast_links`` column alone. Then every row is read back from both and compared (identical values, as the collator
turns them into tensors).

    python benchmarks/speed/dataset_cache_size.py                       # 1,000 rows of 1,024 tokens
    python benchmarks/speed/dataset_cache_size.py --rows 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import datasets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"))
import common  # noqa: E402
from sasa.demo import stdlib_tokenizer  # noqa: E402
from sasa.stdlib_corpus import documented_functions  # noqa: E402


def long_functions(tokenizer, max_length: int, rows: int) -> list[str]:
    """``rows`` standard-library functions of at least ``max_length`` tokens (the distinct ones, repeated in order)."""
    candidates = [f.code for f in documented_functions(min_chars=2 * max_length)]
    lengths = tokenizer(candidates, language=None, return_attention_mask=False)["input_ids"]
    long = [code for code, ids in zip(candidates, lengths) if len(ids) >= max_length]
    if not long:
        raise ValueError(f"no standard-library function has {max_length} tokens: lower --max-length.")
    return [long[i % len(long)] for i in range(rows)]


def directory_bytes(path: str) -> int:
    """Bytes of the Arrow files under ``path`` (``save_to_disk``'s data; its small JSON files left out)."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path)
               for name in names if name.endswith(".arrow"))


def measure(raw: datasets.Dataset, tokenize, max_length: int, scratch: str, name: str) -> dict:
    """Both ways of storing ``raw`` mapped through ``tokenize``: bytes on disk, of the links, per row; read back."""
    data_args = common.DataArguments(max_source_length=max_length)
    stored = {"before": raw.map(tokenize, batched=True, remove_columns=raw.column_names, desc=f"{name}: before"),
              "after": common.tokenize_splits({name: raw}, tokenize, data_args, "after")[name]}
    result = {}
    for way, dataset in stored.items():
        path = os.path.join(scratch, f"{name}-{way}")
        dataset.save_to_disk(path)
        reloaded = datasets.load_from_disk(path)
        result[way] = dict(bytes=directory_bytes(path), link_bytes=reloaded.data.column("ast_links").nbytes,
                           links=str(reloaded.features["ast_links"]))
        stored[way] = reloaded
    result["identical"] = all(stored["before"][i] == stored["after"][i] for i in range(len(raw)))
    result["rows"] = len(raw)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per function (--max_source_length)")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = stdlib_tokenizer(scratch)
        code = long_functions(tokenizer, args.max_length, args.rows)
        raw = datasets.Dataset.from_dict({"func": code, "func2": code[1:] + code[:1], "target": [0] * len(code)})

        def one_function(batch: dict[str, list]) -> dict[str, list]:  # run_defect_detection.py's tokenize
            encoded = tokenizer(batch["func"], truncation=True, max_length=args.max_length)
            return {**encoded, "labels": [int(target) for target in batch["target"]]}

        def a_pair(batch: dict[str, list]) -> dict[str, list]:  # run_clone_detection.py's tokenize
            first, second = (tokenizer(batch[column], truncation=True, max_length=args.max_length)
                             for column in ("func", "func2"))
            encoded = {key: [list(pair) for pair in zip(first[key], second[key])] for key in first}
            return {**encoded, "labels": [int(target) for target in batch["target"]]}

        results = {"functions": measure(raw, one_function, args.max_length, scratch, "functions"),
                   "pairs": measure(raw, a_pair, args.max_length, scratch, "pairs")}

    per = 1000 / args.rows
    print(f"{args.rows} rows of {args.max_length}-token standard-library functions, {len(tokenizer.ast_relations)} "
          f"AST relations ({', '.join(tokenizer.ast_relations)}); Arrow bytes per 1,000 rows:")
    for name, result in results.items():
        for way in ("before", "after"):
            row = result[way]
            print(f"  {name:9} {way:6}: {row['bytes'] * per / 2**20:7.1f} MiB on disk, of which AST links "
                  f"{row['link_bytes'] * per / 2**20:6.1f} MiB ({row['links']})")
        before, after = result["before"]["bytes"], result["after"]["bytes"]
        print(f"  {name:9} saved : {(before - after) * per / 2**20:7.1f} MiB ({after / before:.0%} of before); "
              f"read back identical: {result['identical']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(dict(rows=args.rows, max_length=args.max_length, relations=tokenizer.ast_relations,
                           **results), handle, indent=2)


if __name__ == "__main__":
    main()
