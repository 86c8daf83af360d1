"""What the example scripts' data checks cost: the validation pass per 100,000 rows, next to reading and tokenizing.

Every ``run_*.py`` checks each split before anything is tokenized (``examples/validation.py``): a JSON file is
scanned for emptiness and non-UTF-8 bytes before ``datasets`` reads it, then every row of every column the task reads
is checked against the task's rule on the Arrow columns. This times, per task:

* ``read``: ``datasets.load_dataset("json", ...)`` of the file, fresh (no cache): what every run paid before;
* ``utf8 scan``: :func:`validation.check_json_file`, the new pass over the file's bytes;
* ``rules``: :func:`validation.check_split`, the new pass over the columns;
* ``tokenize``: the scripts' tokenization with AST links of ``--sample`` rows (one process), scaled to all rows:
  what follows the checks in every run.

Data: real functions of this Python's standard library (:func:`sasa.stdlib_corpus.documented_functions`, at least
1,000 characters, docstrings removed), repeated in order to ``--rows`` rows, written as JSON lines in the columns of
defect detection (``func``, ``target``), clone detection (``func1``, ``func2``, ``label``) and code search /
summarization (``code``, ``docstring_tokens``, ``language``).

    python benchmarks/speed/validation_cost.py                    # 100,000 rows per task, about 2 minutes
    python benchmarks/speed/validation_cost.py --rows 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

import datasets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"))
import validation  # noqa: E402
from sasa.demo import stdlib_tokenizer  # noqa: E402
from sasa.stdlib_corpus import documented_functions  # noqa: E402


def task_rows(task: str, functions: list, rows: int) -> list[dict]:
    """``rows`` rows of ``task``'s columns, the functions repeated in order."""
    out = []
    for index in range(rows):
        function = functions[index % len(functions)]
        if task == "defect":
            out.append({"id": index, "func": function.code, "target": index % 2 == 0})
        elif task == "clone":
            other = functions[(index * 7 + 3) % len(functions)]
            out.append({"id": index, "func1": function.code, "func2": other.code, "label": index % 3 == 0})
        else:
            summary = function.docstring.split("\n\n")[0]
            out.append({"id": index, "code": function.code, "docstring_tokens": re.findall(r"\w+|[^\w\s]", summary),
                        "language": "python"})
    return out


def measure(task: str, functions: list, rows: int, tokenizer, sample: int, scratch: str) -> dict:
    """One task's file written, read fresh, scanned, checked; a sample tokenized."""
    path = os.path.join(scratch, f"{task}.jsonl")
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in task_rows(task, functions, rows))
    start = time.perf_counter()
    dataset = datasets.load_dataset("json", data_files=path, split="train", cache_dir=os.path.join(scratch, "cache"))
    read = time.perf_counter() - start
    start = time.perf_counter()
    validation.check_json_file(path, "--train_file")
    scan = time.perf_counter() - start
    start = time.perf_counter()
    _, report = validation.check_split(dataset, validation.TASK_COLUMNS[task], validation.Source("train", path=path))
    rules = time.perf_counter() - start
    assert report.endswith("all good"), report
    columns = [name for name in ("func", "func1", "func2", "code") if name in dataset.column_names]
    head = dataset.select(range(min(sample, len(dataset))))
    start = time.perf_counter()
    for column in columns:
        tokenizer(list(head[column]), truncation=True, max_length=1024)
    tokenize = (time.perf_counter() - start) * len(dataset) / len(head)
    per = 100_000 / len(dataset)
    return {"task": task, "rows": len(dataset), "file_mb": round(os.path.getsize(path) / 2**20, 1),
            "read_s": round(read, 3), "utf8_scan_s": round(scan, 3), "rules_s": round(rules, 3),
            "validation_per_100k_rows_s": round((scan + rules) * per, 3),
            "tokenize_estimated_s": round(tokenize, 1),
            "validation_share_of_read_and_tokenize": round((scan + rules) / (read + tokenize), 5)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per task (default 100,000)")
    parser.add_argument("--sample", type=int, default=500, help="rows tokenized to estimate tokenization's cost")
    parser.add_argument("--tasks", nargs="+", default=["defect", "clone", "search"], choices=sorted(
        validation.TASK_COLUMNS))
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    functions = [function for function in documented_functions(min_chars=1000) if function.docstring.strip()]
    scratch = tempfile.mkdtemp(prefix="validation-cost-")
    try:
        os.makedirs(os.path.join(scratch, "tokenizer"))
        tokenizer = stdlib_tokenizer(os.path.join(scratch, "tokenizer"))
        results = [measure(task, functions, args.rows, tokenizer, args.sample, scratch) for task in args.tasks]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    header = ("task", "rows", "file_mb", "read_s", "utf8_scan_s", "rules_s", "validation_per_100k_rows_s",
              "tokenize_estimated_s", "validation_share_of_read_and_tokenize")
    print(" | ".join(header))
    for row in results:
        print(" | ".join(str(row[key]) for key in header))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
