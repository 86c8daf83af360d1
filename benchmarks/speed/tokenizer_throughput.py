"""Tokenizer + AST throughput (tokens/s) next to the plain BPE tokenizer, on real code.

Corpus: Python files from this interpreter's standard library and site-packages (``--root`` to choose). Vocabulary:
a byte-level BPE trained here on the same files (``--vocab DIR`` to use CodeBERT's or any RoBERTa vocabulary).
Rows, all on the same texts, one text per call (as a data pipeline's ``map`` would do):

* ``RobertaTokenizer``: plain BPE (the peer),
* ``SasaTokenizer (language=None)``: our tokenizer without parsing,
* ``SasaTokenizer (python: ...)``: BPE + tree-sitter parse + AST links, with the default relations
  (``--relations`` to choose) and with each set of ``--compare`` (default: the four structural relations),
* with ``--per-relation``: one row per relation alone,
* ``tree-sitter parse only``: the parse alone, for where the time goes.

The rows take turns every 10 texts (a shared machine slows all rows alike), ``--repeats`` passes over the texts;
each row's time is its median pass, in wall-clock seconds and in CPU seconds of this process (steadier where other
processes compete for the cores).

    python benchmarks/speed/tokenizer_throughput.py --files 300 --json out.json
    python benchmarks/speed/tokenizer_throughput.py --per-relation --compare statement,parent,sibling,span
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import sysconfig
import tempfile
import time


def corpus(root: str, count: int) -> list[str]:
    paths = sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    texts = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        if text.strip():
            texts.append(text)
        if len(texts) == count:
            break
    return texts


def train_vocabulary(texts: list[str], directory: str, size: int) -> None:
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(texts, vocab_size=size, min_frequency=2, show_progress=False,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    trainer.save_model(directory)


def rates(cases: list[tuple[str, object]], texts: list[str], repeats: int,
          chunk: int = 10) -> list[tuple[float, float, int]]:
    """Per case: median wall and CPU seconds of one pass over the texts, and the tokens one pass makes.

    The cases take turns every ``chunk`` texts, so that a machine busy with other work slows them alike; the CPU time
    of this process is the steadier measure where other processes compete for the cores.
    """
    walls, cpus = [[0.0] * repeats for _ in cases], [[0.0] * repeats for _ in cases]
    tokens = [0] * len(cases)
    for repeat in range(repeats):
        tokens = [0] * len(cases)
        for begin in range(0, len(texts), chunk):
            for index, (_, function) in enumerate(cases):
                wall, cpu = time.perf_counter(), time.process_time()
                tokens[index] += sum(function(text) for text in texts[begin : begin + chunk])
                cpus[index][repeat] += time.process_time() - cpu
                walls[index][repeat] += time.perf_counter() - wall
    return [(statistics.median(wall), statistics.median(cpu), count)
            for wall, cpu, count in zip(walls, cpus, tokens)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=sysconfig.get_paths()["stdlib"], help="folder searched for *.py files")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--vocab", help="folder with vocab.json + merges.txt (default: train one here)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--relations", help="comma-separated relations of the main row (default: DEFAULT_RELATIONS)")
    parser.add_argument("--compare", action="append", default=None,
                        help="another comma-separated set of relations to time (repeatable; default: "
                             "statement,parent,sibling,span)")
    parser.add_argument("--per-relation", action="store_true", help="also one row per relation alone")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    from transformers import RobertaTokenizer

    from sasa import SasaTokenizer
    from sasa.ast_languages import get_parser
    from sasa.ast_relations import DEFAULT_RELATIONS, RELATIONS, validate_relations

    main_set = validate_relations(args.relations.split(",")) if args.relations else DEFAULT_RELATIONS
    sets = [main_set] + [validate_relations(names.split(",")) for names in
                         (args.compare if args.compare is not None else ["statement,parent,sibling,span"])]
    if args.per_relation:
        sets += [(name,) for name in RELATIONS]
    sets = list(dict.fromkeys(sets))
    texts = corpus(args.root, args.files)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 2**20
    with tempfile.TemporaryDirectory() as scratch:
        vocab = args.vocab or scratch
        if not args.vocab:
            train_vocabulary(texts, scratch, args.vocab_size)
        plain = RobertaTokenizer.from_pretrained(vocab)
        sasa = {relations: SasaTokenizer.from_pretrained(vocab, ast_relations=relations) for relations in sets}
    options = dict(truncation=True, max_length=args.max_length)
    parser_python = get_parser("python")
    cases = [
        ("RobertaTokenizer", lambda t: len(plain(t, **options)["input_ids"])),
        ("SasaTokenizer (language=None)", lambda t: len(sasa[sets[0]](t, language=None, **options)["input_ids"])),
    ]
    for relations, tokenizer in sasa.items():
        cases.append((f"SasaTokenizer (python: {','.join(relations)})",
                      lambda t, tokenizer=tokenizer: len(tokenizer(t, language="python", **options)["input_ids"])))
    cases.append(("tree-sitter parse only", lambda t: (parser_python.parse(t.encode("utf-8")), 0)[1]))
    print(f"{len(texts)} files, {megabytes:.1f} MB of Python from {args.root}; max_length {args.max_length}")
    width = max(len(name) for name, _ in cases)
    print(f"{'tokenizer':<{width}} {'seconds':>8} {'tokens/s':>10} {'files/s':>8} {'vs plain BPE':>13} "
          f"{'CPU s':>7} {'CPU vs plain':>13}")
    rows = []
    for (name, _), (seconds, cpu_seconds, tokens) in zip(cases, rates(cases, texts, args.repeats)):
        tokens = tokens or rows[0]["tokens"]
        plain_row = rows[0] if rows else dict(seconds=seconds, cpu_seconds=cpu_seconds)
        row = dict(name=name, seconds=seconds, tokens=tokens, tokens_per_second=tokens / seconds,
                   files_per_second=len(texts) / seconds, time_vs_plain=seconds / plain_row["seconds"],
                   cpu_seconds=cpu_seconds, cpu_vs_plain=cpu_seconds / plain_row["cpu_seconds"])
        rows.append(row)
        print(f"{name:<{width}} {seconds:>8.2f} {row['tokens_per_second']:>10.0f} {row['files_per_second']:>8.1f} "
              f"{row['time_vs_plain']:>12.2f}x {cpu_seconds:>7.2f} {row['cpu_vs_plain']:>12.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(files=len(texts), megabytes=megabytes, rows=rows), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
