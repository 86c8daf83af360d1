"""Tokenizer + AST throughput (tokens/s) next to the plain BPE tokenizer, on real code.

Corpus: Python files from this interpreter's standard library and site-packages (``--root`` to choose). Vocabulary:
a byte-level BPE trained here on the same files (``--vocab DIR`` to use CodeBERT's or any RoBERTa vocabulary).
Rows, all on the same texts, one text per call (as a data pipeline's ``map`` would do):

* ``RobertaTokenizer``: plain BPE (the peer),
* ``SasaTokenizer (language=None)``: our tokenizer without parsing,
* ``SasaTokenizer (python)``: BPE + tree-sitter parse + AST links,
* ``tree-sitter parse only``: the parse alone, for where the time goes.

    python benchmarks/tokenizer_throughput.py --files 300 --json out.json
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


def rate(function, texts: list[str], repeats: int) -> tuple[float, int]:
    """Median seconds over ``repeats`` passes of ``function`` over the texts, and the tokens one pass makes."""
    times, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = sum(function(text) for text in texts)
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=sysconfig.get_paths()["stdlib"], help="folder searched for *.py files")
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--vocab", help="folder with vocab.json + merges.txt (default: train one here)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    from transformers import RobertaTokenizer

    from sasa import SasaTokenizer
    from sasa.ast_relations import get_parser

    texts = corpus(args.root, args.files)
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 2**20
    with tempfile.TemporaryDirectory() as scratch:
        vocab = args.vocab or scratch
        if not args.vocab:
            train_vocabulary(texts, scratch, args.vocab_size)
        plain = RobertaTokenizer.from_pretrained(vocab)
        sasa = SasaTokenizer.from_pretrained(vocab)
    options = dict(truncation=True, max_length=args.max_length)
    parser_python = get_parser("python")
    rows = []
    cases = [
        ("RobertaTokenizer", lambda t: len(plain(t, **options)["input_ids"])),
        ("SasaTokenizer (language=None)", lambda t: len(sasa(t, language=None, **options)["input_ids"])),
        ("SasaTokenizer (python)", lambda t: len(sasa(t, language="python", **options)["input_ids"])),
        ("tree-sitter parse only", lambda t: (parser_python.parse(t.encode("utf-8")), 0)[1]),
    ]
    print(f"{len(texts)} files, {megabytes:.1f} MB of Python from {args.root}; max_length {args.max_length}")
    print(f"{'tokenizer':<32} {'seconds':>8} {'tokens/s':>10} {'files/s':>8} {'vs plain BPE':>13}")
    baseline = None
    for name, function in cases:
        seconds, tokens = rate(function, texts, args.repeats)
        tokens = tokens or rows[0]["tokens"]
        baseline = baseline or seconds
        row = dict(name=name, seconds=seconds, tokens=tokens, tokens_per_second=tokens / seconds,
                   files_per_second=len(texts) / seconds, time_vs_plain=seconds / baseline)
        rows.append(row)
        print(f"{name:<32} {seconds:>8.2f} {row['tokens_per_second']:>10.0f} {row['files_per_second']:>8.1f} "
              f"{row['time_vs_plain']:>12.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(files=len(texts), megabytes=megabytes, rows=rows), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
