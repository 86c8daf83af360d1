"""The fine-tuning path as users run it: ``transformers.Trainer`` steps, SASA against RoBERTa-SDPA of the same size.

Each configuration runs in its own Python process: a classification head (the defect-detection setting; the clone
pair model at 2 x L), pre-tokenized random examples of exactly ``L`` tokens (tokenization excluded: it runs once,
before training, in ``datasets.map``), SASA with 4 AST links per token as the tokenizer gives them, the
``SasaDataCollator`` (``DataCollatorWithPadding`` for RoBERTa), AdamW, dropout on (``--attention-dropout 0`` to
compare without attention dropout, under which PyTorch's CPU SDPA keeps its fused kernel), fp32. After ``--warmup`` steps,
``--steps`` steps are timed; the collator's time and the layout building's time (inside the model's forward) are
timed apart, so the table says what share of a step is spent outside the encoder's layers.

    python benchmarks/speed/training_throughput.py                        # small size, 1024 and 2048 tokens
    python benchmarks/speed/training_throughput.py --size base --lengths 1024 --batch-size 2 --json out.json

Targets (issue 11): SASA's training tokens/s at least 1.5x RoBERTa-SDPA's at 2048 tokens and 1.1x at 1024.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TARGETS = {2048: 1.5, 1024: 1.1}


def run_case(spec: dict) -> dict:
    """One Trainer run of ``spec`` in this process: tokens/s and the time shares of collation and layout."""
    import torch
    from transformers import (
        DataCollatorWithPadding,
        RobertaConfig,
        RobertaForSequenceClassification,
        RobertaTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from sasa import SasaConfig, SasaDataCollator, SasaForSequenceClassification, SasaTokenizer
    from sasa.profiling import SIZES

    torch.manual_seed(0)
    length, batch, pairs = spec["length"], spec["batch_size"], spec.get("pairs", False)
    vocab = 50265
    dropout = spec.get("attention_dropout", 0.1)
    size = dict(SIZES[spec["size"]], vocab_size=vocab, num_labels=2, attention_probs_dropout_prob=dropout)
    generator = torch.Generator().manual_seed(1)

    def random_ids() -> list[int]:
        return [0] + torch.randint(5, vocab, (length - 2,), generator=generator).tolist() + [2]

    def random_links() -> list[list[int]]:
        return torch.randint(-1, length, (length, 4), generator=generator).tolist()

    examples = batch * (spec["warmup"] + spec["steps"])
    if spec["model"] == "sasa":
        model = SasaForSequenceClassification(SasaConfig(max_position_embeddings=length + 2, classify_pairs=pairs,
                                                         **size))
        members = 2 if pairs else 1
        features = []
        for index in range(examples):
            parts = [dict(input_ids=random_ids(), attention_mask=[1] * length, ast_links=random_links())
                     for _ in range(members)]
            feature = {k: [p[k] for p in parts] for k in parts[0]} if pairs else parts[0]
            features.append(dict(feature, labels=index % 2))
        collator = SasaDataCollator(_pad_only_tokenizer(SasaTokenizer), pad_to_multiple_of=model.config.block_size)
    else:
        model = RobertaForSequenceClassification._from_config(
            RobertaConfig(max_position_embeddings=length + 2, **size), attn_implementation="sdpa")
        features = [dict(input_ids=random_ids(), attention_mask=[1] * length, labels=i % 2) for i in range(examples)]
        collator = DataCollatorWithPadding(_pad_only_tokenizer(RobertaTokenizer))

    timings = {"collate": 0.0, "layout": 0.0, "steps": []}

    def timed_collator(batch_features):
        start = time.perf_counter()
        result = collator(batch_features)
        timings["collate"] += time.perf_counter() - start
        return result

    if spec["model"] == "sasa":
        build_layout = model.sasa._padded_layout

        def timed_layout(*args, **kwargs):
            start = time.perf_counter()
            result = build_layout(*args, **kwargs)
            timings["layout"] += time.perf_counter() - start
            return result

        model.sasa._padded_layout = timed_layout

    class StepClock(TrainerCallback):
        """Starts the clock when the warm-up steps end (before the next batch is collated), stops it after the last."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == spec["warmup"]:
                timings["collate"] = timings["layout"] = 0.0  # count only the timed steps
                timings["start"] = time.perf_counter()
            elif state.global_step == spec["warmup"] + spec["steps"]:
                timings["end"] = time.perf_counter()

    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        arguments = TrainingArguments(output_dir=scratch, max_steps=spec["warmup"] + spec["steps"],
                                      per_device_train_batch_size=batch, learning_rate=1e-4, report_to=[],
                                      disable_tqdm=True, save_strategy="no", dataloader_pin_memory=False,
                                      logging_strategy="no", remove_unused_columns=False)
        trainer = Trainer(model=model, args=arguments, train_dataset=features, data_collator=timed_collator,
                          callbacks=[StepClock()])
        trainer.train()
    seconds = timings["end"] - timings["start"]
    tokens = spec["steps"] * batch * length * (2 if pairs else 1)
    return dict(spec, seconds=seconds, tokens_per_second=tokens / seconds,
                collate_share=timings["collate"] / seconds, layout_share=timings["layout"] / seconds)


def _pad_only_tokenizer(cls):
    """A RoBERTa-style tokenizer of ``cls`` over a vocabulary of special tokens only: the examples are pre-made ids, the
    collator only pads (id 1, on the right, ``ast_links`` with -1 for SASA's)."""
    import tempfile

    directory = tempfile.mkdtemp(prefix="pad-only-tokenizer-")
    with open(os.path.join(directory, "vocab.json"), "w") as handle:
        json.dump({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}, handle)
    with open(os.path.join(directory, "merges.txt"), "w") as handle:
        handle.write("#version: 0.2\n")
    return cls(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"))


def run_in_subprocess(spec: dict, timeout: float = 1800) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                            timeout=timeout, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return dict(spec, error=(result.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "base"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 2048])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (at least 1)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--no-pairs", action="store_true", help="skip the clone pair model at 2 x 1024")
    parser.add_argument("--attention-dropout", type=float, default=0.1,
                        help="attention_probs_dropout_prob of both models (0.1: RoBERTa's and CodeXGLUE's fine-tuning "
                             "default; with dropout PyTorch's CPU SDPA leaves its fused kernel for the math path)")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    if args.worker:
        print(json.dumps(run_case(json.loads(args.worker))))
        return 0

    common = dict(size=args.size, batch_size=args.batch_size, warmup=args.warmup, steps=args.steps,
                  attention_dropout=args.attention_dropout)
    cases = [dict(common, model=model, length=length) for length in args.lengths for model in ("sasa", "roberta_sdpa")]
    if not args.no_pairs:
        cases.append(dict(common, model="sasa", length=1024, pairs=True))
    rows = []
    for case in cases:
        row = run_in_subprocess(case)
        rows.append(row)
        status = row.get("error") or f"{row['tokens_per_second']:.0f} tokens/s"
        print(f"  {case['model']:<13} {case['length']:>5}{' x2' if case.get('pairs') else '   '}  {status}", flush=True)

    print(f"\n{args.size} size, batch {args.batch_size}, attention dropout {args.attention_dropout}, {args.steps} timed "
          "Trainer steps each")
    print(f"{'model':<18} {'tokens':>7} {'tokens/s':>9} {'vs RoBERTa-SDPA':>16} {'collation':>10} {'layout':>7}")
    checks = []
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<18} {row['length']:>7} failed: {row['error'][:80]}")
            continue
        name = "sasa (pairs)" if row.get("pairs") else row["model"]
        peer = next((r for r in rows if r["model"] == "roberta_sdpa" and r["length"] == row["length"]
                     and "error" not in r), None)
        ratio = row["tokens_per_second"] / peer["tokens_per_second"] if peer and row["model"] == "sasa" else None
        shown_length = f"2x{row['length']}" if row.get("pairs") else str(row["length"])
        print(f"{name:<18} {shown_length:>7} {row['tokens_per_second']:>9.0f} "
              f"{(f'{ratio:.2f}x' if ratio else ''):>16} {row['collate_share']:>9.1%} {row['layout_share']:>7.1%}")
        if ratio and not row.get("pairs") and row["length"] in TARGETS:
            checks.append(dict(target=f"SASA training tokens/s / RoBERTa-SDPA at {row['length']}",
                               value=round(ratio, 3), limit=TARGETS[row["length"]], met=ratio >= TARGETS[row["length"]]))
    for check in checks:
        print(f"  {'met   ' if check['met'] else 'MISSED'} {check['target']}: {check['value']} (at least {check['limit']})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(dict(rows=rows, targets=checks), handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
